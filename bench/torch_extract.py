#!/usr/bin/python3
"""torch_extract.py SLIDE PATCHES.h5 WEIGHTS.pth [--batch 64] [--threads N] [--channels-last]
[--bf16] [--out FEATS.npy]: the PyTorch side of `bench/cpu-vs-torch.sh` (a): slide -> features
the way CLAM's extract_features_fp.py runs on a CPU, for the same tile coordinates as ours.

CLAM (Whole_Slide_Bag_FP + extract_features_fp.py): a DataLoader without workers on a CPU
(`num_workers` is only set for CUDA), each tile read with openslide-python
`read_region((x, y), patch_level, (size, size)).convert("RGB")`, torchvision's ToTensor and
Normalize with the ImageNet mean/std, then the network.  Here the tile is resized to 224² with
antialiased bilinear interpolation (what our preprocessing and tests/reference/gen_backbones.py
do; CLAM's default keeps 256²), and the network is torchvision's resnet50() through layer3 +
global average pooling (CLAM's resnet50_trunc_baseline, 1024-d), in eval mode, no autograd,
channels-last with --channels-last, `torch.autocast("cpu", torch.bfloat16)` with --bf16.

The time printed (one JSON line) runs from the first read to the last feature: reading, decoding,
preprocessing and the network; importing torch and building the model are outside it (they are
inside our figure, which is the whole command's wall clock: the comparison favours PyTorch).
WEIGHTS: a state dict of torchvision's resnet50() (bench/torch_backbone.py --save), the file our
safetensors was converted from, so both sides compute the same features (--out writes them)."""
import argparse
import json
import time

import h5py
import numpy as np
import openslide
import torch
import torch.nn.functional as F
import torchvision

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("slide")
    ap.add_argument("patches", help="CLAM patch file (coords, attrs patch_level/patch_size)")
    ap.add_argument("weights", help="resnet50() state dict")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: the cores)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--out", help="write the features [N, 1024] here (.npy)")
    a = ap.parse_args()
    if a.batch < 1:
        ap.error("--batch must be at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    else:
        import os
        torch.set_num_threads(len(os.sched_getaffinity(0)))

    with h5py.File(a.patches, "r") as f:
        coords = f["coords"][:]
        level = int(f["coords"].attrs["patch_level"])
        size = int(f["coords"].attrs["patch_size"])
    m = torchvision.models.resnet50()
    sd = torch.load(a.weights, map_location="cpu")
    m.load_state_dict(sd)
    m = m.eval()
    if a.channels_last:
        m = m.to(memory_format=torch.channels_last)

    def net(h):
        h = m.maxpool(m.relu(m.bn1(m.conv1(h))))
        return F.adaptive_avg_pool2d(m.layer3(m.layer2(m.layer1(h))), 1).flatten(1)

    slide = openslide.OpenSlide(a.slide)
    feats = []
    t0 = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
        for i in range(0, len(coords), a.batch):
            tiles = [np.asarray(slide.read_region((int(x), int(y)), level, (size, size)).convert("RGB"))
                     for x, y in coords[i:i + a.batch]]
            x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255.0
            x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
            x = (x - MEAN) / STD
            if a.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            feats.append(net(x).float())
    dt = time.perf_counter() - t0
    out = torch.cat(feats).numpy()
    if a.out:
        np.save(a.out, out)
    print(json.dumps({"bench": "torch_extract", "torch": torch.__version__, "tiles": len(coords),
                      "batch": a.batch, "threads": torch.get_num_threads(),
                      "channels_last": a.channels_last, "precision": "bf16" if a.bf16 else "fp32",
                      "seconds": round(dt, 3), "tiles_per_s": round(len(coords) / dt, 2)}))


if __name__ == "__main__":
    main()
