#!/bin/sh
# wsi-slides.sh SRCDIR TEST_WSI MEXD_EXE: test-wsi's slide tests on generated slides (the reader,
# broken files, a mutation fuzz run) and `mexd tiles` on each broken file (exit 1, the file named).
# Exit 77 (skip) without vips/tiffset.
set -eu
src=$1
test_wsi=$2
mexd=$3
command -v vips >/dev/null 2>&1 && command -v tiffset >/dev/null 2>&1 || { echo "no vips/tiffset: skip"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sh "$src/tests/data/make-slide.sh" "$tmp/s" --seed 7 --width 4096 --height 3072 --flavour aperio >/dev/null
sh "$src/tests/data/make-slide.sh" "$tmp/small" --seed 3 --width 1024 --height 768 --flavour both >/dev/null
sh "$src/tests/data/make-bad-slides.sh" "$tmp/bad" "$tmp/s/synth.svs" >/dev/null
MEXD_TEST_SLIDE="$tmp/s/synth.svs" MEXD_TEST_BAD_SLIDES="$tmp/bad" \
  MEXD_TEST_FUZZ_SLIDE="$tmp/small/synth.svs" "$test_wsi" -p /wsi/slide 2>"$tmp/err" || {
  tail -20 "$tmp/err"; exit 1; }
# the generic-TIFF flavour too
MEXD_TEST_FUZZ_SLIDE="$tmp/small/generic.tif" MEXD_FUZZ_ITERATIONS=100 "$test_wsi" -p /wsi/slide/fuzz \
  2>"$tmp/err" || { tail -20 "$tmp/err"; exit 1; }
status=0
for f in truncated.svs stripped.tif png-renamed.svs empty.svs dir.svs missing.svs; do
  rc=0
  "$mexd" tiles "$tmp/bad/$f" --preset bwh_biopsy --out "$tmp/x.h5" -q 2>"$tmp/msg" || rc=$?
  msg=$(head -c 400 "$tmp/msg")
  echo "$f: exit $rc: $msg"
  if [ $rc -ne 1 ] || ! grep -q "$f" "$tmp/msg"; then
    echo "  expected exit 1 and a message naming $f"; status=1
  fi
done
# a slide that opens but whose tiles are damaged: extraction stops with the read error
rc=0
"$mexd" extract --backbone "$src/tests/fixtures/backbones/resnet-tiny.safetensors" \
  --slide "$tmp/bad/corrupt-tiles.svs" --preset bwh_biopsy --device cpu --out "$tmp/f.h5" -q \
  2>"$tmp/msg" || rc=$?
echo "corrupt-tiles.svs (extract): exit $rc: $(head -c 300 "$tmp/msg")"
if [ $rc -ne 1 ] || ! grep -q "corrupt-tiles.svs" "$tmp/msg" || [ -e "$tmp/f.h5" ]; then
  echo "  expected exit 1, a message naming the file and no feature file"; status=1
fi
exit $status
