#!/usr/bin/env python3
"""torch_gemm.py: PyTorch's GEMM figure beside `mexd bench gemm`, measured the same way.

    /usr/bin/python3 bench/torch_gemm.py M N K [--device cpu|cuda] [--dtype f32|f16] [--reps R] [--threads T]

Times C = A @ B on random [M,K] x [K,N] matrices (after a warm-up; on CUDA with a synchronize
per run and TF32 off) and prints the median GFLOP/s, one JSON line like mexd's --json output."""
import argparse
import json
import os
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("M", type=int)
    ap.add_argument("N", type=int)
    ap.add_argument("K", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16"])
    ap.add_argument("--reps", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="CPU threads (default: every core, as OpenBLAS uses)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dt = torch.float32 if a.dtype == "f32" else torch.float16
    if a.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    flop = 2.0 * a.M * a.N * a.K
    reps = a.reps or (5 if flop > 1e11 else 10 if flop > 1e9 else 30)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(a.M, a.K, generator=g) * 2 - 1).to(a.device, dt)
    y = (torch.rand(a.K, a.N, generator=g) * 2 - 1).to(a.device, dt)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    times = []
    for r in range(reps + 1):
        sync()
        t0 = time.perf_counter()
        torch.matmul(x, y)
        sync()
        if r:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({"op": "gemm", "impl": f"torch {torch.__version__}", "device": a.device,
                      "threads": torch.get_num_threads(), "dtype": a.dtype, "M": a.M, "N": a.N,
                      "K": a.K, "reps": reps, "median_s": med, "gflops": round(flop / med / 1e9, 2)}))


if __name__ == "__main__":
    main()
