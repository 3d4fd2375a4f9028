#!/bin/sh
# convert-vit-check.sh SRCDIR TEST_BACKBONE: tools/convert.py vit on a timm-layout state dict (the
# small ViT fixture's tensors plus the head a timm checkpoint has) gives a backbone file whose
# forward matches the reference (test-backbone on cpu with the converted file); a state dict with a
# wrong shape fails naming the key.  Skipped (77) where Debian's python3-torch is not installed.
src=${1:?usage: convert-vit-check.sh SRCDIR TEST_BACKBONE}
exe=${2:?usage: convert-vit-check.sh SRCDIR TEST_BACKBONE}
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "python3-torch is not installed: skipped"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$src" "$tmp" <<'PY' || exit 1
import sys, torch
sys.path.insert(0, sys.argv[1] + "/tests/reference")
import mexd_ref
t, _ = mexd_ref.load_safetensors(sys.argv[1] + "/tests/fixtures/backbones/vit-tiny.safetensors")
sd = {k: torch.from_numpy(v) for k, v in t.items()}
sd["head.weight"], sd["head.bias"] = torch.zeros(5, 48), torch.zeros(5)
torch.save({"model": sd}, sys.argv[2] + "/good.pth")
sd["blocks.1.attn.proj.weight"] = torch.zeros(48, 47)
torch.save(sd, sys.argv[2] + "/bad.pth")
PY
/usr/bin/python3 "$src/tools/convert.py" vit "$tmp/good.pth" "$tmp/v.safetensors" --arch vit-s16 --heads 3 --input-size 64 || exit 1
G_TEST_SRCDIR="$src/tests" MEXD_TEST_VIT="$tmp/v.safetensors" MEXD_TEST_BACKENDS=cpu \
  "$exe" -p /backbone/vit-tiny/cpu/f32 >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
grep -q "^ok 1 /backbone/vit-tiny/cpu/f32" "$tmp/log" || { cat "$tmp/log"; exit 1; }
if /usr/bin/python3 "$src/tools/convert.py" vit "$tmp/bad.pth" "$tmp/b.safetensors" --arch vit-s16 --heads 3 --input-size 64 2>"$tmp/err"; then
  echo "convert.py accepted a wrong shape"; exit 1
fi
grep -q "blocks.1.attn.proj.weight has shape \[48, 47\], expected \[48, 48\]" "$tmp/err" || { cat "$tmp/err"; exit 1; }
echo "ok"
