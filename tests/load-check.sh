#!/bin/sh
# load-check.sh SRCDIR TEST_LOAD: 200 slides through one pipeline (tests/test-load.c): one small
# generated slide (1024 x 768: 6 tissue tiles with preset bwh_biopsy) for openslidesrc, and a
# scanner's tiles through appsrc.  Without vips/tiffset the openslidesrc half skips.
set -eu
src=$1
test_load=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export GST_REGISTRY="$tmp/registry.bin"
if command -v vips >/dev/null 2>&1 && command -v tiffset >/dev/null 2>&1; then
  sh "$src/tests/data/make-slide.sh" "$tmp/s" --seed 7 --width 1024 --height 768 \
    --flavour aperio >/dev/null
  export MEXD_LOAD_SLIDE="$tmp/s/synth.svs"
fi
ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0" "$test_load"
