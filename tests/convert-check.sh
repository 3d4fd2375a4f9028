#!/bin/sh
# convert-check.sh SRCDIR TEST_MEXD: tools/convert.py on a state dict laid out like the authors'
# (tests/fixtures/mexd/authors-e2.pth, made by tests/reference/make_authors_checkpoint.py from the
# reference's E = 2 weights) gives a model whose official-mode forward matches the reference's
# fixtures (test-mexd on the E = 2 official cases, with the converted file as the model).
# Skipped (77) where Debian's python3-torch is not installed.
src=${1:?usage: convert-check.sh SRCDIR TEST_MEXD}
exe=${2:?usage: convert-check.sh SRCDIR TEST_MEXD}
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "python3-torch is not installed: skipped"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 "$src/tools/convert.py" mexd-official "$src/tests/fixtures/mexd/authors-e2.pth" \
  "$tmp/converted.safetensors" --dataset camelyon16 || exit 1
G_TEST_SRCDIR="$src/tests" MEXD_TEST_MODEL_E2="$tmp/converted.safetensors" MEXD_TEST_CASES=e2-official \
  MEXD_TEST_BACKENDS=cpu "$exe" -p /mexd/cpu || exit 1
