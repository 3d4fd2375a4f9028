#!/usr/bin/python3
"""Fixtures for the OpenCV operations CLAM's tissue segmentation uses (lib/wsi/tissue.c):
cv2 itself (Debian 12's python3-opencv, OpenCV 4.6) computes the expected results.

    /usr/bin/python3 tests/reference/gen_wsi_cv.py tests/fixtures/wsi/cv.json

Images are base64 of their bytes, row-major.  Cases:
  saturation: S of cvtColor(RGB2HSV) for the 256x256 image R = x, G = y, B = min(x, y)
              (every max/min pair), the input is made by the test
  median:     medianBlur(src, k)
  otsu:       threshold(src, 0, 255, BINARY + OTSU)'s threshold
  close:      morphologyEx(src, MORPH_CLOSE, ones((k, k)))
  contours:   findContours(bin, RETR_CCOMP, CHAIN_APPROX_NONE): points, hierarchy, contourArea,
              boundingRect, and pointPolygonTest(contour, pt, False) at sample points
"""
import base64
import json
import sys

import cv2
import numpy as np

rng = np.random.default_rng(20261125)


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode()


def blobs(h, w, density, blur):
    n = rng.random((h, w)).astype(np.float32)
    if blur:
        n = cv2.GaussianBlur(n, (0, 0), blur)
        n = (n - n.min()) / max(float(n.max() - n.min()), 1e-6)
    return (n > 1 - density).astype(np.uint8) * 255


cases = []
x, y = np.meshgrid(np.arange(256), np.arange(256))
rgb = np.stack([x, y, np.minimum(x, y)], -1).astype(np.uint8)
cases.append({"kind": "saturation", "s": b64(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[:, :, 1])})
rgba = np.concatenate([rgb, np.full((256, 256, 1), 255, np.uint8)], -1)
assert (cv2.cvtColor(rgba, cv2.COLOR_RGB2HSV)[:, :, 1] ==
        cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[:, :, 1]).all()

for (h, w, k) in [(30, 40, 3), (30, 40, 5), (30, 40, 7), (30, 40, 11), (5, 4, 7), (13, 17, 11),
                  (1, 9, 7)]:
    src = rng.integers(0, 256, (h, w), dtype=np.uint8)
    if k == 7 and h == 30:
        src = (rng.random((h, w)) < 0.3).astype(np.uint8) * rng.integers(0, 40, (h, w)).astype(np.uint8)
    cases.append({"kind": "median", "w": w, "h": h, "k": k, "src": b64(src),
                  "dst": b64(cv2.medianBlur(src, k))})

for i in range(6):
    h, w = 24 + i, 31 + 2 * i
    src = np.where(rng.random((h, w)) < 0.3 + 0.1 * i, rng.normal(40 + 10 * i, 12, (h, w)),
                   rng.normal(5, 4, (h, w))).clip(0, 255).astype(np.uint8)
    if i == 5:
        src[:] = 7  # one level only: OpenCV returns 0
    t, _ = cv2.threshold(src, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    cases.append({"kind": "otsu", "w": w, "h": h, "src": b64(src), "t": int(t)})

for (h, w, k) in [(30, 40, 4), (30, 40, 2), (30, 40, 3), (9, 7, 4), (30, 40, 1)]:
    src = blobs(h, w, 0.25, 1.0 if k != 3 else 0)
    cases.append({"kind": "close", "w": w, "h": h, "k": k, "src": b64(src),
                  "dst": b64(cv2.morphologyEx(src, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8)))})


def contour_case(img):
    h, w = img.shape
    cont, hier = cv2.findContours(img, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    c = {"kind": "contours", "w": w, "h": h, "src": b64(img), "contours": [], "parent": [],
         "area": [], "rect": [], "tests": []}
    for i, ct in enumerate(cont):
        pts = ct.reshape(-1, 2)
        c["contours"].append(pts.flatten().tolist())
        c["parent"].append(int(hier[0][i][3]))
        c["area"].append(float(cv2.contourArea(ct)))
        c["rect"].append(list(cv2.boundingRect(ct)))
        x0, y0, bw, bh = cv2.boundingRect(ct)
        for _ in range(12):
            px = float(rng.integers(x0 - 1, x0 + bw + 1))
            py = float(rng.integers(y0 - 1, y0 + bh + 1))
            if rng.random() < 0.3:
                px += 0.5
            if rng.random() < 0.2:
                py += 0.5
            c["tests"].append([i, px, py, int(cv2.pointPolygonTest(ct, (px, py), False))])
        for j in range(min(4, len(pts))):  # vertices are on the edge
            p = pts[int(rng.integers(len(pts)))]
            c["tests"].append([i, float(p[0]), float(p[1]),
                               int(cv2.pointPolygonTest(ct, (float(p[0]), float(p[1])), False))])
    return c


shapes = []
for i in range(14):
    h, w = int(rng.integers(16, 40)), int(rng.integers(16, 50))
    shapes.append(blobs(h, w, [0.2, 0.35, 0.5, 0.65][i % 4], [0, 1.2, 2.0][i % 3]))
ring = np.zeros((40, 50), np.uint8)  # nested: object, hole, island in the hole, its hole
cv2.rectangle(ring, (2, 2), (47, 37), 255, -1)
cv2.rectangle(ring, (8, 8), (41, 31), 0, -1)
cv2.rectangle(ring, (14, 12), (35, 27), 255, -1)
cv2.rectangle(ring, (20, 17), (29, 22), 0, -1)
ring[0, :] = 255  # touching the image border
ring[:, 49] = 255
ring[38, 5] = 255  # single pixels and a thin line
ring[39, 10:20] = 255
ring[25, 10] = 255
shapes.append(ring)
full = np.full((6, 7), 255, np.uint8)
shapes.append(full)
shapes.append(np.zeros((5, 5), np.uint8))
checker = ((np.indices((12, 12)).sum(0) % 2) * 255).astype(np.uint8)
shapes.append(checker)
for s in shapes:
    cases.append(contour_case(s))

with open(sys.argv[1], "w") as f:
    json.dump({"generator": "tests/reference/gen_wsi_cv.py", "opencv": cv2.__version__,
               "cases": cases}, f, separators=(",", ":"))
print(f"{len(cases)} cases, OpenCV {cv2.__version__}")
