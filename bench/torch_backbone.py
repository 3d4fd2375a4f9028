#!/usr/bin/python3
"""torch_backbone.py [--batch B] [--reps R] [--device cpu|cuda] [--fp16]: the PyTorch figure beside
`mexd bench backbone` for ResNet-50-trunc (docs/PERFORMANCE.md): torchvision's resnet50() (random
weights) through layer3 + global average pooling, with the same preprocessing (8-bit 256² tiles
/ 255, antialiased bilinear resize to 224², normalisation), eval mode, no autograd.  Prints one
JSON line (median of R timed batches after one warm-up)."""
import argparse
import json
import time

import torch
import torch.nn.functional as F
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    dt = torch.float16 if a.fp16 else torch.float32
    m = torchvision.models.resnet50().eval().to(dev, dt)
    x = torch.randint(0, 256, (a.batch, 3, 256, 256), dtype=torch.uint8, device=dev)

    def run():
        with torch.no_grad():
            h = F.interpolate(x.float() / 255, size=(224, 224), mode="bilinear", antialias=True,
                              align_corners=False)
            h = ((h - 0.45) / 0.22).to(dt)
            h = m.maxpool(m.relu(m.bn1(m.conv1(h))))
            h = m.layer3(m.layer2(m.layer1(h)))
            f = F.adaptive_avg_pool2d(h, 1).flatten(1)
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
    print(json.dumps({"bench": "torch_backbone", "torch": torch.__version__, "device": str(dev),
                      "precision": "fp16" if a.fp16 else "fp32", "batch": a.batch,
                      "ms_per_batch": round(med * 1e3, 2), "images_per_s": round(a.batch / med, 1)}))


if __name__ == "__main__":
    main()
