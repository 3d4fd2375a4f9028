#!/bin/sh
# backbones-full.sh SRCDIR TEST_BACKBONE (meson test --setup slow --suite slow): the full-size
# checks of issue 4 on two 256² tiles resized to 224², on every backend in fp32 (1e-4) and fp16
# (1e-2): torchvision's own resnet50() (seeded weights and batch-norm statistics) converted by
# `tools/convert.py resnet50` (input, stem, layer1..3, the 1024-d features), and ViT-S/16 (the
# reference ViT of gen_backbones.py at full size) converted by `tools/convert.py vit` (input,
# tokens, the last block, the 384-d class token), and CTransPath (the reference Swin-T with its conv
# stem, checkpoint layout) converted by `tools/convert.py ctranspath` (stem, stages, 768-d).
# Needs Debian's python3-torch and python3-torchvision (skipped, 77, without them).
src=${1:?usage: backbones-full.sh SRCDIR TEST_BACKBONE}
exe=${2:?usage: backbones-full.sh SRCDIR TEST_BACKBONE}
/usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null ||
  { echo "python3-torch / python3-torchvision are not installed: skipped"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 "$src/tests/reference/gen_backbones.py" --full "$tmp" || exit 1
/usr/bin/python3 "$src/tools/convert.py" resnet50 "$tmp/resnet50.pth" "$tmp/resnet50.safetensors" || exit 1
/usr/bin/python3 "$src/tools/convert.py" vit "$tmp/vit-s16.pth" "$tmp/vit-s16.safetensors" --arch vit-s16 || exit 1
/usr/bin/python3 "$src/tools/convert.py" ctranspath "$tmp/ctranspath.pth" "$tmp/ctranspath.safetensors" || exit 1
export G_TEST_SRCDIR="$src/tests" MEXD_TEST_RESNET="$tmp/resnet50.safetensors" \
  MEXD_TEST_RESNET_IO="$tmp/resnet50-io.safetensors" MEXD_TEST_VIT="$tmp/vit-s16.safetensors" \
  MEXD_TEST_VIT_IO="$tmp/vit-s16-io.safetensors" MEXD_TEST_CTRANSPATH="$tmp/ctranspath.safetensors" \
  MEXD_TEST_CTRANSPATH_IO="$tmp/ctranspath-io.safetensors"
cases=$("$exe" -l | grep -E '^/backbone/(resnet|vit|ctranspath)-tiny/')
[ -n "$cases" ] || { echo "test-backbone lists no network cases"; exit 1; }
for c in $cases; do
  "$exe" -p "$c" --verbose >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
  cat "$tmp/log"
  grep -q "^ok 1 $c" "$tmp/log" || { echo "$c did not run"; exit 1; }
done
