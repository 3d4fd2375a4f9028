#!/bin/bash
# gemm-table.sh MEXD [DEVICE…]: the GEMM rows of docs/PERFORMANCE.md, as JSON lines on stdout.
# For each device (default: cpu and vulkan:0) runs `mexd bench gemm` at 512³, 2048³ and 4096³ in
# f32 (and f16 on Vulkan devices), then PyTorch on the same machine (cpu, and cuda when present).
# On the GPU machine (../shared/gpu/README.md) run it with the bundle's mexd:
#   bench/gemm-table.sh mexd vulkan:0 > $OUT/gemm.jsonl
set -u
mexd=${1:?usage: gemm-table.sh MEXD [DEVICE…]}; shift
devices=("$@")
[ ${#devices[@]} -gt 0 ] || devices=(cpu vulkan:0)
py=/usr/bin/python3; [ -x $py ] || py=python3
here=$(dirname "$0")
for d in "${devices[@]}"; do
  for s in 512 2048 4096; do
    timeout 900 "$mexd" bench gemm $s $s $s --device "$d" --json
    [[ $d == vulkan* ]] && timeout 900 "$mexd" bench gemm $s $s $s --device "$d" --dtype f16 --json
  done
done
for s in 512 2048 4096; do
  timeout 900 $py "$here/torch_gemm.py" $s $s $s --device cpu
  if $py -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    timeout 900 $py "$here/torch_gemm.py" $s $s $s --device cuda
    timeout 900 $py "$here/torch_gemm.py" $s $s $s --device cuda --dtype f16
  fi
done
