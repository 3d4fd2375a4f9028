#!/bin/sh
# heatmap.sh SLIDE BACKBONE MODEL OUT_DIR [width=N] [element properties...]
#
# Classifies slides (several separated by ';') and draws each one's Dyn-MoE routing as an RGBA
# overlay OUT_DIR/heatmap-NN.png (NN: the slide's number in the stream; the result's slide id is
# in its mexd-result message, printed by gst-launch -m):
#
#   gst-launch-1.0 -m openslidesrc location=SLIDE ! mexdembed model=BACKBONE ! \
#       mexdmoe model=MODEL ! mexddiffc model=MODEL ! mexdheatmap width=1024 ! pngenc ! \
#       multifilesink location=OUT_DIR/heatmap-%02d.png
#
# Other name=value arguments go to the element with that property, as in classify-slide.sh
# (alpha goes to mexdheatmap).  Uninstalled: GST_PLUGIN_PATH=build/plugins.
set -eu
[ $# -ge 4 ] || { sed -n '2p' "$0" | sed 's/^# //' >&2; exit 2; }
slide=$1 backbone=$2 model=$3 out=$4
shift 4
src_props="" embed_props="" moe_props="" diffc_props="" map_props=""
for kv in "$@"; do
  case "${kv%%=*}" in
    magnification|mpp|level|tile-size|overlap|preset|contour-fn|threads) src_props="$src_props $kv" ;;
    precision|batch-size) embed_props="$embed_props $kv" ;;
    mode) moe_props="$moe_props $kv" ;;
    sampler|steps|chains|seed|eta) diffc_props="$diffc_props $kv" ;;
    width|alpha) map_props="$map_props $kv" ;;
    device) embed_props="$embed_props $kv"; moe_props="$moe_props $kv"; diffc_props="$diffc_props $kv" ;;
    *) echo "heatmap.sh: unknown property ${kv%%=*}" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
# shellcheck disable=SC2086
exec gst-launch-1.0 -m openslidesrc location="$slide" $src_props \
  ! mexdembed model="$backbone" $embed_props \
  ! mexdmoe model="$model" $moe_props \
  ! mexddiffc model="$model" $diffc_props \
  ! mexdheatmap $map_props ! pngenc ! multifilesink location="$out/heatmap-%02d.png"
