#!/bin/sh
# classify-slide.sh SLIDE BACKBONE MODEL [element properties...]
#
# Classifies whole slides (several separated by ';') from the slide file to the label: tissue
# tiles (CLAM's rules) → backbone features → Dyn-MoE → diffusion classifier; one `mexd-result`
# message per slide on the bus (printed by gst-launch -m):
#
#   gst-launch-1.0 -m openslidesrc location=SLIDE ! mexdembed model=BACKBONE ! \
#       mexdmoe model=MODEL ! mexddiffc model=MODEL ! fakesink
#
# name=value arguments go to the element with that property (openslidesrc: magnification, mpp,
# level, tile-size, overlap, preset, contour-fn, threads; mexdembed: precision, batch-size;
# mexdmoe: mode; mexddiffc: sampler, steps, chains, seed, eta; device: all three).
# Uninstalled: GST_PLUGIN_PATH=build/plugins.
set -eu
[ $# -ge 3 ] || { sed -n '2p' "$0" | sed 's/^# //' >&2; exit 2; }
slide=$1 backbone=$2 model=$3
shift 3
src_props="" embed_props="" moe_props="" diffc_props=""
for kv in "$@"; do
  case "${kv%%=*}" in
    magnification|mpp|level|tile-size|overlap|preset|contour-fn|threads) src_props="$src_props $kv" ;;
    precision|batch-size) embed_props="$embed_props $kv" ;;
    mode) moe_props="$moe_props $kv" ;;
    sampler|steps|chains|seed|eta) diffc_props="$diffc_props $kv" ;;
    device) embed_props="$embed_props $kv"; moe_props="$moe_props $kv"; diffc_props="$diffc_props $kv" ;;
    *) echo "classify-slide.sh: unknown property ${kv%%=*}" >&2; exit 2 ;;
  esac
done
# shellcheck disable=SC2086
exec gst-launch-1.0 -m openslidesrc location="$slide" $src_props \
  ! mexdembed model="$backbone" $embed_props \
  ! mexdmoe model="$model" $moe_props \
  ! mexddiffc model="$model" $diffc_props \
  ! fakesink
