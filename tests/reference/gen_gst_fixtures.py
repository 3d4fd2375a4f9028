#!/usr/bin/python3
"""Fixtures for the GStreamer pipeline tests: a tiny ViT backbone whose 32-d features fit the
MExD test model (tests/fixtures/mexd/model-e2.safetensors, feature_dim 32), so that
openslidesrc ! mexdembed ! mexdmoe ! mexddiffc runs end to end in CI.

    /usr/bin/python3 tests/reference/gen_gst_fixtures.py tests/fixtures/gst
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_backbones as gb  # noqa: E402
import mexd_ref as ref  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(41)
vit = gb.ViT(32, 1, 2, img=64, layer_scale=True).eval()
cfg = {"arch": "vit-s16", "dim": 32, "depth": 1, "heads": 2, "input_size": 64, "patch": 16,
       "layer_scale": True, "mean": gb.MEAN, "std": gb.STD, "output_dim": 32}
ref.save_safetensors(os.path.join(out, "vit-d32.safetensors"), dict(vit.state_dict()),
                     {"mexd.format": "mexd-backbone/1", "mexd.config": json.dumps(cfg)})
print(f"wrote {out}/vit-d32.safetensors")
