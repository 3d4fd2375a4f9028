#!/usr/bin/python3
"""torch_backbone.py [--arch A] [--batch B] [--reps R] [--device cpu|cuda] [--fp16 | --bf16] [--save F]:
the PyTorch figure beside `mexd bench backbone` (docs/PERFORMANCE.md), random weights, the same
preprocessing (8-bit 256² tiles / 255, antialiased bilinear resize to 224², normalisation), eval
mode, no autograd.  A: resnet50-trunc (torchvision's resnet50() through layer3 + average pooling),
vit-s16 / vit-b16 / vit-l16 and ctranspath (the reference modules of
tests/reference/gen_backbones.py, written from timm's semantics).  --save F writes the model's
state dict to F (for tools/convert.py, so both sides run the same weights).  Prints one JSON
line (median of R timed batches after one warm-up)."""
import argparse
import json
import time

import os
import sys

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import gen_backbones as gb  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet50-trunc",
                    choices=["resnet50-trunc", "vit-s16", "vit-b16", "vit-l16", "ctranspath"])
    ap.add_argument("--save", help="write the state dict here")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--bf16", action="store_true",
                    help="torch.autocast('cpu', dtype=torch.bfloat16) around the network (fp32 weights)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    ap.add_argument("--channels-last", action="store_true", help="NHWC memory format (convolutions)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    dt = torch.float16 if a.fp16 else torch.float32
    vits = {"vit-s16": (384, 12, 6), "vit-b16": (768, 12, 12), "vit-l16": (1024, 24, 16)}
    if a.arch == "resnet50-trunc":
        m = torchvision.models.resnet50()
        net = lambda h: F.adaptive_avg_pool2d(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(h))))))), 1).flatten(1)  # noqa: E731,E501
    elif a.arch == "ctranspath":
        m = gb.CTransPath()
        net = m
    else:
        m = gb.ViT(*vits[a.arch])
        net = m
    m = m.eval()
    if a.save:
        torch.save(m.state_dict(), a.save)
    m = m.to(dev, dt)
    if a.channels_last:
        m = m.to(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (a.batch, 3, 256, 256), dtype=torch.uint8, device=dev)

    def run():
        with torch.no_grad():
            h = F.interpolate(x.float() / 255, size=(224, 224), mode="bilinear", antialias=True,
                              align_corners=False)
            h = ((h - 0.45) / 0.22).to(dt)
            if a.channels_last:
                h = h.contiguous(memory_format=torch.channels_last)
            if a.bf16:
                with torch.autocast(dev.type, dtype=torch.bfloat16):
                    f = net(h).float()
            else:
                f = net(h)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return f

    run()
    ts = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    med = ts[len(ts) // 2]
    print(json.dumps({"bench": "torch_backbone", "arch": a.arch, "torch": torch.__version__, "device": str(dev),
                      "precision": "fp16" if a.fp16 else "bf16" if a.bf16 else "fp32", "batch": a.batch,
                      "channels_last": a.channels_last,
                      "ms_per_batch": round(med * 1e3, 2), "images_per_s": round(a.batch / med, 1)}))


if __name__ == "__main__":
    main()
