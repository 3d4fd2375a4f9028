#!/bin/sh
# convert-resnet-check.sh SRCDIR TEST_BACKBONE: tools/convert.py resnet50 on a torchvision-layout
# state dict (the tiny ResNet fixture's tensors plus the layer4 / fc / num_batches_tracked keys a
# real checkpoint has) gives a backbone file whose forward matches the torchvision fixture
# (test-backbone on cpu with the converted file); a state dict with a wrong shape fails naming
# the key.  Skipped (77) where Debian's python3-torch is not installed.
src=${1:?usage: convert-resnet-check.sh SRCDIR TEST_BACKBONE}
exe=${2:?usage: convert-resnet-check.sh SRCDIR TEST_BACKBONE}
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "python3-torch is not installed: skipped"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$src" "$tmp" <<'PY' || exit 1
import sys, torch
sys.path.insert(0, sys.argv[1] + "/tests/reference")
import mexd_ref
t, _ = mexd_ref.load_safetensors(sys.argv[1] + "/tests/fixtures/backbones/resnet-tiny.safetensors")
sd = {k: torch.from_numpy(v) for k, v in t.items()}
for k in list(sd):
    if k.endswith("running_var"):
        sd[k[:-len("running_var")] + "num_batches_tracked"] = torch.tensor(7)
sd["layer4.0.conv1.weight"] = torch.zeros(128, 256, 1, 1)
sd["fc.weight"], sd["fc.bias"] = torch.zeros(10, 512), torch.zeros(10)
torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, sys.argv[2] + "/good.pth")
sd["layer2.0.conv2.weight"] = torch.zeros(32, 32, 1, 1)
torch.save(sd, sys.argv[2] + "/bad.pth")
PY
/usr/bin/python3 "$src/tools/convert.py" resnet50 "$tmp/good.pth" "$tmp/r.safetensors" --input-size 64 || exit 1
G_TEST_SRCDIR="$src/tests" MEXD_TEST_RESNET="$tmp/r.safetensors" MEXD_TEST_BACKENDS=cpu \
  "$exe" -p /backbone/resnet-tiny/cpu/f32 >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
grep -q "^ok 1 /backbone/resnet-tiny/cpu/f32" "$tmp/log" || { cat "$tmp/log"; exit 1; }
if /usr/bin/python3 "$src/tools/convert.py" resnet50 "$tmp/bad.pth" "$tmp/b.safetensors" 2>"$tmp/err"; then
  echo "convert.py accepted a wrong shape"; exit 1
fi
grep -q "layer2.0.conv2.weight has shape \[32, 32, 1, 1\], expected \[32, 32, 3, 3\]" "$tmp/err" || { cat "$tmp/err"; exit 1; }
echo "ok"
