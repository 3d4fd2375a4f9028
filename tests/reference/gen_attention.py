#!/usr/bin/python3
"""Writes tests/fixtures/mexd/attention-e2.safetensors: adapter #1's class-token attention over a
bag's instances (the per-tile score of heatmaps) for model-e2 and the bags n7, n257 and n1000,
from mexd_ref (float32, eval mode).

The attention of the class token (row 0 of the TransMIL sequence) in the FIRST Nyström layer:
A1[cls] · Z · A3 per head (A1 = softmax(q·k̃ᵀ), Z = pinv(A2), A3 = softmax(q̃·kᵀ): the Nyström
approximation of the class token's softmax row), averaged over the heads, at the N instance
tokens 1..N (the square padding's copies and the zero rows in front are left out).

    /usr/bin/python3 tests/reference/gen_attention.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mexd_ref as R  # noqa: E402

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "mexd")


def cls_attention(x, p, cfg, prefix="adapter1"):
    N = x.shape[0]
    W = cfg["width"]
    h0 = torch.relu(R.linear(x, p, prefix + ".fc1"))
    S = R.square_side(N)
    Np = S * S
    h = torch.cat([h0, h0[:Np - N]], dim=0)
    h = torch.cat([p[prefix + ".cls_token"].reshape(1, W), h], dim=0)
    tr = {}
    R.nystrom(R.layer_norm(h, p, prefix + ".layer1.norm"), p, prefix + ".layer1.attn", cfg, trace=tr)
    a1, z, a3 = tr["a1"], tr["z"], tr["a3"]
    n = Np + 1
    off = a1.shape[1] - n  # zero rows in front
    att = (a1[:, off:off + 1, :] @ z @ a3)[:, 0, :]  # [H, n_p]
    return att[:, off + 1:off + 1 + N].mean(dim=0)


def main():
    p, cfg = R.load_model(os.path.join(FIX, "model-e2.safetensors"))
    out = {}
    with torch.no_grad():
        for n in (7, 257, 1000):
            x, _ = R.load_safetensors(os.path.join(FIX, f"bag-n{n}.safetensors"))
            out[f"attention.n{n}"] = cls_attention(torch.from_numpy(x["x"]), p, cfg)
    R.save_safetensors(os.path.join(FIX, "attention-e2.safetensors"), out,
                       {"model": "model-e2.safetensors", "what": "adapter #1 class-token attention"})
    print({k: tuple(v.shape) for k, v in out.items()})


if __name__ == "__main__":
    main()
