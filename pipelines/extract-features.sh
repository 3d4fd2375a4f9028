#!/bin/sh
# extract-features.sh SLIDE BACKBONE OUT_DIR [element properties...]
#
# Tile features of a slide as a CLAM HDF5 file OUT_DIR/<slide id>.h5, with the mexd GStreamer
# elements: the tissue tiles (CLAM's rules) → the backbone → the feature file.  Extra arguments
# of the form name=value go to the element that has that property (openslidesrc: magnification,
# mpp, level, tile-size, overlap, preset, contour-fn, threads; mexdembed: device, precision,
# batch-size).  SLIDE may list several slides separated by ';'.
#
#   gst-launch-1.0 openslidesrc location=SLIDE ! mexdembed model=BACKBONE ! \
#       mexdfeaturesink location=OUT_DIR/%s.h5
#
# Uninstalled: GST_PLUGIN_PATH=build/plugins.
set -eu
[ $# -ge 3 ] || { sed -n '2p' "$0" | sed 's/^# //' >&2; exit 2; }
slide=$1 model=$2 out=$3
shift 3
src_props="" embed_props=""
for kv in "$@"; do
  case "${kv%%=*}" in
    magnification|mpp|level|tile-size|overlap|preset|contour-fn|threads) src_props="$src_props $kv" ;;
    device|precision|batch-size) embed_props="$embed_props $kv" ;;
    *) echo "extract-features.sh: unknown property ${kv%%=*}" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
# shellcheck disable=SC2086
exec gst-launch-1.0 -q openslidesrc location="$slide" $src_props \
  ! mexdembed model="$model" $embed_props \
  ! mexdfeaturesink location="$out/%s.h5"
