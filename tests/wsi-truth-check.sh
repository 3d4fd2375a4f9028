#!/bin/sh
# wsi-truth-check.sh SRCDIR MEXD_EXE: `mexd tiles` (CLAM's default preset) on a synthetic slide
# with known tissue (tests/data/make-slide.sh: seed 7, 8192 x 6144, one large tissue piece with
# an elliptic hole of 5.7 Mpx and a lesion rectangle; large because the default preset drops
# any piece whose area net of holes is under 100 reference patches = 100 x 512² level-0 pixels,
# and any hole under 16 x 512²) against the generator's truth:
#   (a) its tissue polygons (GeoJSON, outer ring filled, hole rings cleared), rasterised at 1/8,
#       cover the same fraction of the slide as truth-mask.png, within 2 percentage points, and
#       disagree with it on at most 5 % of the slide (a guard against flipped or shifted
#       polygons, which keep the fraction);
#   (b) of the 256² level-0 cells that are >= 90 % tissue, >= 99 % have their centre inside one
#       of our tiles (our grid starts at each contour's bounding box, not at a multiple of 256);
#   (c) >= 99 % of our tiles hold some tissue (truth fraction > 0 over their part in the slide).
# Also: coords non-empty, patch_size 256, and as many GeoJSON tile features as coords.
# Exit 77 (skipped) where vips, tiffset or Debian's python3 with cv2, openslide and h5py is
# missing.
src=${1:?usage: wsi-truth-check.sh SRCDIR MEXD_EXE}
exe=${2:?usage: wsi-truth-check.sh SRCDIR MEXD_EXE}
for t in vips tiffset; do
  command -v $t >/dev/null 2>&1 || { echo "$t is not installed: skipped"; exit 77; }
done
/usr/bin/python3 -c 'import cv2, openslide, h5py, numpy' 2>/dev/null ||
  { echo "/usr/bin/python3 with cv2, openslide, h5py and numpy is missing: skipped"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP

sh "$src/tests/data/make-slide.sh" "$tmp" --seed 7 --width 8192 --height 6144 --blob 2048 \
  --coverage 0.75 --min-piece 28000000 --min-hole 5000000 --hole 4700,1300,2800,2600 \
  --lesion 3000,2500,1200,900 --flavour aperio || exit 1
"$exe" tiles "$tmp/synth.svs" --size 256 --out "$tmp/p.h5" --geojson "$tmp/g.geojson" ||
  { echo "FAIL: mexd tiles exited with $?"; exit 1; }

/usr/bin/python3 - "$tmp" <<'EOF'
import json, os, sys
import cv2
import h5py
import numpy as np

tmp = sys.argv[1]
truth = json.load(open(os.path.join(tmp, "truth.json")))
W, H, C = truth["width"], truth["height"], truth["cell"]
mask = cv2.imread(os.path.join(tmp, "truth-mask.png"), cv2.IMREAD_GRAYSCALE)
if mask is None or mask.shape != (H, W):
    sys.exit("FAIL: cannot read truth-mask.png")
mask = (mask > 127).astype(np.uint8)
ok = True

with h5py.File(os.path.join(tmp, "p.h5"), "r") as f:
    coords = f["coords"][:]
    attrs = dict(f["coords"].attrs)
if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
    sys.exit(f"FAIL: coords has shape {coords.shape}")
if int(attrs.get("patch_size", -1)) != 256 or int(attrs.get("patch_level", -1)) != 0:
    print(f"FAIL: patch_size {attrs.get('patch_size')}, patch_level {attrs.get('patch_level')}")
    ok = False

gj = json.load(open(os.path.join(tmp, "g.geojson")))
polys, ntiles = [], 0
for feat in gj.get("features", []):
    props = feat.get("properties") or {}
    geom = feat.get("geometry") or {}
    if props.get("objectType") == "tile":
        ntiles += 1
        continue
    if (props.get("classification") or {}).get("name") != "Tissue":
        continue
    if geom.get("type") == "Polygon":
        polys.append(geom["coordinates"])
    elif geom.get("type") == "MultiPolygon":
        polys.extend(geom["coordinates"])
if ntiles != len(coords):
    print(f"FAIL: {ntiles} tile features in the GeoJSON, {len(coords)} coords")
    ok = False

# (a) tissue fraction at 1/8 (fillPoly with 3 fractional bits: level-0 coordinates / 8).
D, SHIFT = 8, 3
lw, lh = -(-W // D), -(-H // D)
ours = np.zeros((lh, lw), np.uint8)
for rings in polys:
    layer = np.zeros_like(ours)
    pts = [np.array(r, np.int64).reshape(-1, 1, 2).astype(np.int32) for r in rings]
    cv2.fillPoly(layer, pts[:1], 1, cv2.LINE_8, SHIFT)
    if len(pts) > 1:
        cv2.fillPoly(layer, pts[1:], 0, cv2.LINE_8, SHIFT)
    ours |= layer
pad = np.zeros((lh * D, lw * D), np.uint8)
pad[:H, :W] = mask
small = pad.reshape(lh, D, lw, D).mean(axis=(1, 3)) >= 0.5
frac_ours = ours.mean()
frac_truth = small.mean()
disagree = (small != (ours > 0)).mean()
print(f"(a) tissue: ours {100 * frac_ours:.2f} %, truth {100 * frac_truth:.2f} % "
      f"(level 0: {100 * truth['tissue_fraction']:.2f} %), they disagree on "
      f"{100 * disagree:.2f} % of the slide; {len(polys)} tissue polygons")
if abs(frac_ours - frac_truth) > 0.02:
    print("FAIL: tissue fractions differ by more than 2 percentage points")
    ok = False
if disagree > 0.05:
    print("FAIL: the polygons and the truth disagree on more than 5 % of the slide")
    ok = False

# (b) full cells covered by our tiles (cell centre inside a tile).
cover = np.zeros((H, W), np.uint8)
for x, y in coords.tolist():
    cover[max(0, y):max(0, y + 256), max(0, x):max(0, x + 256)] = 1
full = [(x, y) for x, y, fr in truth["cells"] if fr >= 0.9]
hit = sum(1 for x, y in full if cover[min(H - 1, y + C // 2), min(W - 1, x + C // 2)])
rb = hit / len(full) if full else 0.0
print(f"(b) cells >= 90 % tissue with their centre in one of our tiles: {hit} of {len(full)} "
      f"({100 * rb:.1f} %)")
if not full or rb < 0.99:
    print("FAIL: want >= 99 %")
    ok = False

# (c) our tiles that hold tissue.
good = 0
for x, y in coords.tolist():
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + 256), min(H, y + 256)
    if x1 > x0 and y1 > y0 and mask[y0:y1, x0:x1].any():
        good += 1
rc = good / len(coords)
print(f"(c) our tiles holding tissue: {good} of {len(coords)} ({100 * rc:.1f} %)")
if rc < 0.99:
    print("FAIL: want >= 99 %")
    ok = False
sys.exit(0 if ok else 1)
EOF
