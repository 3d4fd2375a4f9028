#!/bin/sh
# classify-py-check.sh SRC: pipelines/classify.py (PyGObject) on the fixture model and a bag
# given twice (two slides): a table row per slide (7 tiles, a class, p in 0..1; the same bag with
# the same seed gives the same class and p), nothing on stderr; a missing model is exit 1 with
# the element's message, a bad option exit 2.  Skipped (77)
# without PyGObject's GStreamer bindings (python3-gi, gir1.2-gstreamer-1.0).
set -eu
src=$1
py=/usr/bin/python3
"$py" -c 'import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst' 2>/dev/null ||
  { echo "no PyGObject GStreamer bindings: skipped"; exit 77; }
fx=$src/tests/fixtures/mexd
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$fx/bag-n7.npy" "$tmp/same.npy"
"$py" "$src/pipelines/classify.py" "$fx/bag-n7.npy;$tmp/same.npy" \
  "$fx/model-e2.safetensors" --device cpu --chains 8 --seed 3 >"$tmp/out" 2>"$tmp/err" ||
  { cat "$tmp/out" "$tmp/err"; exit 1; }
cat "$tmp/out"
[ ! -s "$tmp/err" ] || { echo "stderr not empty:"; cat "$tmp/err"; exit 1; }
[ "$(wc -l <"$tmp/out")" = 3 ] || { echo "expected a header and two slide rows"; exit 1; }
for slide in bag-n7 same; do
  grep -Eq "^$slide +7  [a-z0-9_-]+ +(0\.[0-9]{3}|1\.000) " "$tmp/out" ||
    { echo "no row for $slide"; exit 1; }
done
# the same bag, the same seed: the same class and probability
[ "$(sed -n 2p "$tmp/out" | awk '{print $3, $4}')" = "$(sed -n 3p "$tmp/out" | awk '{print $3, $4}')" ] ||
  { echo "the same bag classified twice differs"; exit 1; }
rc=0
"$py" "$src/pipelines/classify.py" "$fx/bag-n7.npy" "$tmp/none.safetensors" --device cpu \
  >/dev/null 2>"$tmp/err" || rc=$?
[ $rc = 1 ] && grep -q "none.safetensors" "$tmp/err" ||
  { echo "missing model: exit $rc"; cat "$tmp/err"; exit 1; }
rc=0
"$py" "$src/pipelines/classify.py" "$fx/bag-n7.npy" "$fx/model-e2.safetensors" --chains 0 \
  >/dev/null 2>"$tmp/err" || rc=$?
[ $rc = 2 ] || { echo "--chains 0: exit $rc, expected 2"; cat "$tmp/err"; exit 1; }
echo "classify.py: a row per slide, errors as exit codes"
