#!/bin/sh
# gst_classify_slide.sh SLIDE BACKBONE MODEL [prop=value…]: end-to-end throughput of the
# classify-slide pipeline (pipelines/classify-slide.sh): tiles per second from the slide file to
# the mexd-result message, wall clock of the whole gst-launch run (start-up and model loading
# included), with the tile count from the result.
set -eu
[ $# -ge 3 ] || { sed -n '2p' "$0" | sed 's/^# //' >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
t0=$(date +%s.%N)
out=$(sh "$here/pipelines/classify-slide.sh" "$@")
t1=$(date +%s.%N)
tiles=$(printf '%s\n' "$out" | sed -n 's/.*mexd-result.*tiles=(gint64)\([0-9]*\).*/\1/p' | paste -sd+ | bc)
printf '%s\n' "$out" | grep -o 'mexd-result, slide-id=[^,]*, class=[^,]*' || true
echo "$tiles tiles in $(echo "$t1 - $t0" | bc) s: $(echo "scale=1; $tiles / ($t1 - $t0)" | bc) tiles/s"
