#!/bin/sh
# convert-ctranspath-check.sh SRCDIR TEST_BACKBONE: tools/convert.py ctranspath on a state dict laid
# out like the TransPath/CHIEF checkpoint ({"model": ...}, with the relative_position_index and
# attn_mask buffers, num_batches_tracked and a head) made from the small CTransPath fixture gives a
# backbone file whose forward matches the reference (test-backbone on cpu with the converted file);
# a wrong shape fails naming the key.  Skipped (77) where Debian's python3-torch is not installed.
src=${1:?usage: convert-ctranspath-check.sh SRCDIR TEST_BACKBONE}
exe=${2:?usage: convert-ctranspath-check.sh SRCDIR TEST_BACKBONE}
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "python3-torch is not installed: skipped"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$src" "$tmp" <<'PY' || exit 1
import sys, torch
sys.path.insert(0, sys.argv[1] + "/tests/reference")
import mexd_ref
t, _ = mexd_ref.load_safetensors(sys.argv[1] + "/tests/fixtures/backbones/ctranspath-tiny.safetensors")
sd = {k: torch.from_numpy(v) for k, v in t.items()}
for k in list(sd):
    if k.endswith("relative_position_bias_table"):
        sd[k.replace("relative_position_bias_table", "relative_position_index")] = torch.zeros(4, 4, dtype=torch.long)
    if k.endswith("running_var"):
        sd[k[:-len("running_var")] + "num_batches_tracked"] = torch.tensor(3)
sd["layers.0.blocks.1.attn_mask"] = torch.zeros(16, 16, 16)
sd["head.weight"], sd["head.bias"] = torch.zeros(2, 128), torch.zeros(2)
torch.save({"model": sd}, sys.argv[2] + "/good.pth")
sd["layers.2.downsample.reduction.weight"] = torch.zeros(128, 255)
torch.save(sd, sys.argv[2] + "/bad.pth")
PY
/usr/bin/python3 "$src/tools/convert.py" ctranspath "$tmp/good.pth" "$tmp/c.safetensors" --input-size 64 || exit 1
G_TEST_SRCDIR="$src/tests" MEXD_TEST_CTRANSPATH="$tmp/c.safetensors" MEXD_TEST_BACKENDS=cpu \
  "$exe" -p /backbone/ctranspath-tiny/cpu/f32 >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
grep -q "^ok 1 /backbone/ctranspath-tiny/cpu/f32" "$tmp/log" || { cat "$tmp/log"; exit 1; }
if /usr/bin/python3 "$src/tools/convert.py" ctranspath "$tmp/bad.pth" "$tmp/b.safetensors" --input-size 64 2>"$tmp/err"; then
  echo "convert.py accepted a wrong shape"; exit 1
fi
grep -q "layers.2.downsample.reduction.weight has shape \[128, 255\], expected \[128, 256\]" "$tmp/err" || { cat "$tmp/err"; exit 1; }
echo "ok"
