#!/usr/bin/python3
"""Builds an authors-layout stage-1 state dict (MEXD.md §6; the keys of the authors' MOE_v3_2.py
with Models/TransMIL/net.py) from the reference E = 2 model, for tools/convert.py's test:

    /usr/bin/python3 tests/reference/make_authors_checkpoint.py [MODEL.safetensors [OUT.pth]]

adapter #1 (on the D-dim features) is the authors' `trans1`, adapter #2 (on the selected 512-dim
rows) is `agg1`; router 0 is `gate`, router r >= 1 `gate{r}`; expert classifiers `classifier.{r}`.
The unused top-level `_fc2` [C, 2W], `norm2` [2W], `confounder_W_q/k` [128, W] are added with
seeded random values (convert.py must skip them).  The Diff-C tensors are not part of it.
"""
import collections
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mexd_ref as ref  # noqa: E402

# our name (without the adapter prefix) -> the authors' TransMIL name
TRANSMIL_KEYS = [
    ("fc1.weight", "_fc1.0.weight"), ("fc1.bias", "_fc1.0.bias"), ("cls_token", "cls_token"),
] + [
    (f"{L}.{a}", f"{L}.{b}") for L in ("layer1", "layer2") for a, b in (
        ("norm.weight", "norm.weight"), ("norm.bias", "norm.bias"),
        ("attn.qkv.weight", "attn.to_qkv.weight"),
        ("attn.out.weight", "attn.to_out.0.weight"), ("attn.out.bias", "attn.to_out.0.bias"),
        ("attn.res_conv.weight", "attn.res_conv.weight"))
] + [
    (f"ppeg.conv{k}.{w}", f"pos_layer.{pk}.{w}") for k, pk in ((7, "proj"), (5, "proj1"), (3, "proj2"))
    for w in ("weight", "bias")
] + [("norm.weight", "norm.weight"), ("norm.bias", "norm.bias"), ("head.weight", "_fc2.weight"),
     ("head.bias", "_fc2.bias")]


def write(model_path, out_path):
    p, cfg = ref.load_model(model_path)
    E, W = cfg["experts"], cfg["width"]
    C = len(cfg["classes"])
    sd = collections.OrderedDict()
    for ours, theirs in (("adapter1", "trans1"), ("adapter2", "agg1")):
        for a, b in TRANSMIL_KEYS:
            sd[f"{theirs}.{b}"] = p[f"{ours}.{a}"].clone()
    sd["gate.weight"] = p["moe.router.0.weight"].clone()
    for r in range(1, E):
        sd[f"gate{r}.weight"] = p[f"moe.router.{r}.weight"].clone()
    for r in range(E):
        sd[f"classifier.{r}.weight"] = p[f"moe.classifier.{r}.weight"].clone()
        sd[f"classifier.{r}.bias"] = p[f"moe.classifier.{r}.bias"].clone()
    g = torch.Generator().manual_seed(5)
    sd["confounder_W_q.weight"] = torch.randn((128, W), generator=g)
    sd["confounder_W_q.bias"] = torch.randn((128,), generator=g)
    sd["confounder_W_k.weight"] = torch.randn((128, W), generator=g)
    sd["confounder_W_k.bias"] = torch.randn((128,), generator=g)
    sd["_fc2.weight"] = torch.randn((C, 2 * W), generator=g)
    sd["_fc2.bias"] = torch.randn((C,), generator=g)
    sd["norm2.weight"] = torch.randn((2 * W,), generator=g)
    sd["norm2.bias"] = torch.randn((2 * W,), generator=g)
    torch.save(sd, out_path)


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(HERE))
    fx = os.path.join(root, "tests", "fixtures", "mexd")
    m = sys.argv[1] if len(sys.argv) > 1 else os.path.join(fx, "model-e2.safetensors")
    o = sys.argv[2] if len(sys.argv) > 2 else os.path.join(fx, "authors-e2.pth")
    write(m, o)
    print(o)
