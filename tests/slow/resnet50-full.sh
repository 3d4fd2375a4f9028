#!/bin/sh
# resnet50-full.sh SRCDIR TEST_BACKBONE (meson test --setup slow --suite slow): the full-size
# check of issue 4 — torchvision's own resnet50() (seeded weights and batch-norm statistics),
# converted by tools/convert.py resnet50, against PyTorch on two 256² tiles resized to 224²:
# input, stem, layer1..3 and the 1024-d features on every backend, fp32 (1e-4) and fp16 (1e-2).
# Needs Debian's python3-torch and python3-torchvision (skipped, 77, without them).
src=${1:?usage: resnet50-full.sh SRCDIR TEST_BACKBONE}
exe=${2:?usage: resnet50-full.sh SRCDIR TEST_BACKBONE}
/usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null ||
  { echo "python3-torch / python3-torchvision are not installed: skipped"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 "$src/tests/reference/gen_backbones.py" --full "$tmp" || exit 1
/usr/bin/python3 "$src/tools/convert.py" resnet50 "$tmp/resnet50.pth" "$tmp/resnet50.safetensors" || exit 1
export G_TEST_SRCDIR="$src/tests" MEXD_TEST_RESNET="$tmp/resnet50.safetensors" \
  MEXD_TEST_RESNET_IO="$tmp/resnet50-io.safetensors"
cases=$("$exe" -l | grep '^/backbone/resnet-tiny/')
[ -n "$cases" ] || { echo "test-backbone lists no resnet cases"; exit 1; }
for c in $cases; do
  "$exe" -p "$c" --verbose >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
  cat "$tmp/log"
  grep -q "^ok 1 $c" "$tmp/log" || { echo "$c did not run"; exit 1; }
done
