#!/usr/bin/python3
"""Reference tissue segmentation and patch coordinates in CLAM's layout, for tests.

    /usr/bin/python3 tests/reference/clam_patch.py SLIDE --out OUT.h5
        [--preset default|tcga|bwh_biopsy|bwh_resection] [--patch-size 256] [--step-size N]
        [--patch-level 0] [--contour-fn four_pt|four_pt_hard|center] [--no-padding] [--otsu]
        [--seg-level N] [--contours-json FILE]

Written for this project's tests from the rules in shared/design/WSI.md ("Exact rules"), not
copied from CLAM: the point is an independent second implementation whose coordinates must equal
those of `mexd tiles` bit for bit.  It needs Debian's python3-openslide, python3-opencv (4.6),
python3-h5py and python3-numpy (run it with /usr/bin/python3).

Output: OUT.h5 with dataset `coords` (N x 2 int64, level-0 x, y of each patch's top-left corner,
contour order, not deduplicated) and attributes patch_size, patch_level, downsample (2 floats),
level_dim and downsampled_level_dim (2 ints, the patch level's size), name (slide file name
without its extension).  --contours-json writes the kept contours and holes at level 0:
{"seg_level", "downsample", "contours": [[[x, y], ...], ...], "holes": [[[[x, y], ...], ...], ...]}.

OpenCV 4.6 details the coordinates depend on (checked with Debian's python3-opencv):
- cvtColor(RGBA, COLOR_RGB2HSV) takes the 4-channel region as is (alpha ignored).  8-bit S is
  (diff * round((255 << 12) / V) + 2048) >> 12, not round(255 * diff / V): they differ for 207
  of the 32,896 (V, min) pairs, e.g. V 90, min 87 gives S 8 (not 9), which threshold 8 drops.
- medianBlur replicates the border pixels.
- MORPH_CLOSE with an even kernel (4x4 ones, 2x2 ones) erodes and dilates with the same anchor
  (k/2, k/2) and no reflection: the closed mask is shifted one pixel right and down (a lone
  5x5 block at 3..7 comes back at 4..8).  Outside the image counts as neither.
- findContours(RETR_CCOMP) lists outer contours in decreasing raster order of their first
  (topmost, then leftmost) point, each followed by its holes; patch order follows that list.
- pointPolygonTest(contour, pt, False) on an int32 contour does not round a fractional point;
  a point on an edge or vertex gives 0 (kept by the four_pt test's >= 0, not a hole by > 0).
"""
import argparse
import json
import os
import sys

import cv2
import h5py
import numpy as np
import openslide

# sthresh, mthresh, close, use_otsu, a_t, a_h, max_n_holes
PRESETS = {
    "default": (8, 7, 4, False, 100, 16, 8),
    "tcga": (8, 7, 4, False, 16, 4, 8),
    "bwh_biopsy": (15, 11, 2, False, 1, 1, 2),
    "bwh_resection": (15, 11, 4, False, 100, 16, 8),
}
REF_PATCH = 512
MAX_SEG_PIXELS = 1e8  # CLAM's create_patches_fp.py refuses a larger segmentation level


def level_downsamples(slide):
    """Per-axis downsample of each level: (W0/W, H0/H) unless that equals (d, d) for OpenSlide's
    own downsample d, in which case (d, d)."""
    w0, h0 = slide.level_dimensions[0]
    out = []
    for d, (w, h) in zip(slide.level_downsamples, slide.level_dimensions):
        est = (w0 / float(w), h0 / float(h))
        out.append((d, d) if est == (d, d) else est)
    return out


def segment(slide, seg_level, ds, sthresh, mthresh, close, use_otsu, a_t, a_h, max_n_holes):
    """Contours and holes at the segmentation level (int32 arrays n x 1 x 2), filtered."""
    w, h = slide.level_dimensions[seg_level]
    rgba = np.array(slide.read_region((0, 0), seg_level, (w, h)))
    hsv = cv2.cvtColor(rgba, cv2.COLOR_RGB2HSV)  # 4-channel input: alpha is ignored
    sat = cv2.medianBlur(np.ascontiguousarray(hsv[:, :, 1]), mthresh)
    if use_otsu:
        _, binary = cv2.threshold(sat, 0, 255, cv2.THRESH_OTSU + cv2.THRESH_BINARY)
    else:
        _, binary = cv2.threshold(sat, sthresh, 255, cv2.THRESH_BINARY)
    if close > 0:
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((close, close), np.uint8))

    ref_area = int(REF_PATCH ** 2 / (ds[0] * ds[1]))
    a_t = a_t * ref_area
    a_h = a_h * ref_area

    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None or len(contours) == 0:
        return [], []
    parent = hierarchy[0][:, 3]
    kept, kept_holes = [], []
    for i in np.flatnonzero(parent == -1):
        hole_ids = np.flatnonzero(parent == i)
        net = cv2.contourArea(contours[i]) - np.array(
            [cv2.contourArea(contours[j]) for j in hole_ids]).sum()
        if net == 0:
            continue
        if net > a_t:
            kept.append(contours[i])
            holes = sorted((contours[j] for j in hole_ids), key=cv2.contourArea, reverse=True)
            kept_holes.append([hole for hole in holes[:max_n_holes]
                               if cv2.contourArea(hole) > a_h])
    return kept, kept_holes


def to_level0(points, ds):
    return np.array(points * ds, dtype="int32")


def patch_coords(contour, holes, level0_dim, patch_ds, patch_size, step_size, contour_fn,
                 padding):
    """Kept level-0 top-left corners for one (level-0) contour, x-major."""
    x0, y0, w, h = cv2.boundingRect(contour)
    ref = patch_size * patch_ds[0]
    if padding:
        stop_x, stop_y = x0 + w, y0 + h
    else:
        stop_x = min(x0 + w, level0_dim[0] - ref + 1)
        stop_y = min(y0 + h, level0_dim[1] - patch_size * patch_ds[1] + 1)
    xs = np.arange(x0, stop_x, step_size * patch_ds[0])
    ys = np.arange(y0, stop_y, step_size * patch_ds[1])
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    candidates = np.array([gx.flatten(), gy.flatten()]).transpose()

    half = ref // 2
    s = int(ref // 2 * 0.5)

    def inside(px, py):
        return cv2.pointPolygonTest(contour, (float(px), float(py)), False) >= 0

    kept = []
    for x, y in candidates:
        cx, cy = x + half, y + half
        if contour_fn == "center" or s == 0:
            ok = inside(cx, cy)
        else:
            pts = ((cx - s, cy - s), (cx + s, cy + s), (cx + s, cy - s), (cx - s, cy + s))
            if contour_fn == "four_pt":
                ok = any(inside(px, py) for px, py in pts)
            else:  # four_pt_hard
                ok = all(inside(px, py) for px, py in pts)
        if not ok:
            continue
        centre = (float(x + ref / 2), float(y + ref / 2))
        if any(cv2.pointPolygonTest(hole, centre, False) > 0 for hole in holes):
            continue
        kept.append((x, y))
    return kept


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("slide")
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--step-size", type=int, default=None)
    ap.add_argument("--patch-level", type=int, default=0)
    ap.add_argument("--contour-fn", choices=["four_pt", "four_pt_hard", "center"],
                    default="four_pt")
    ap.add_argument("--no-padding", action="store_true")
    ap.add_argument("--otsu", action="store_true")
    ap.add_argument("--seg-level", type=int, default=-1,
                    help="segmentation level (default: level 0 if the slide has one level, "
                         "else OpenSlide's best level for downsample 64)")
    ap.add_argument("--contours-json")
    args = ap.parse_args()
    step = args.step_size if args.step_size is not None else args.patch_size
    if args.patch_size < 1 or step < 1:
        ap.error("patch and step sizes must be positive")

    sthresh, mthresh, close, use_otsu, a_t, a_h, max_n_holes = PRESETS[args.preset]
    use_otsu = use_otsu or args.otsu

    slide = openslide.OpenSlide(args.slide)
    dims = slide.level_dimensions
    dss = level_downsamples(slide)
    if not 0 <= args.patch_level < len(dims):
        sys.exit(f"{args.slide}: no level {args.patch_level}")
    if args.seg_level >= 0:
        seg_level = args.seg_level
        if seg_level >= len(dims):
            sys.exit(f"{args.slide}: no level {seg_level}")
    elif len(dims) == 1:
        seg_level = 0
    else:
        seg_level = slide.get_best_level_for_downsample(64)
    sw, sh = dims[seg_level]
    if sw * sh > MAX_SEG_PIXELS:
        sys.exit(f"{args.slide}: segmentation level {seg_level} is {sw} x {sh}, "
                 "too large (more than 1e8 pixels)")
    seg_ds = dss[seg_level]

    contours, holes = segment(slide, seg_level, seg_ds, sthresh, mthresh, close, use_otsu,
                              a_t, a_h, max_n_holes)
    contours = [to_level0(c, seg_ds) for c in contours]
    holes = [[to_level0(hh, seg_ds) for hh in hs] for hs in holes]

    patch_ds = (int(dss[args.patch_level][0]), int(dss[args.patch_level][1]))
    coords = []
    for contour, hs in zip(contours, holes):
        coords.extend(patch_coords(contour, hs, dims[0], patch_ds, args.patch_size, step,
                                   args.contour_fn, not args.no_padding))
    coords = np.array(coords, dtype=np.int64).reshape(-1, 2)

    name = os.path.splitext(os.path.basename(args.slide))[0]
    with h5py.File(args.out, "w") as f:
        d = f.create_dataset("coords", data=coords)
        d.attrs["patch_size"] = args.patch_size
        d.attrs["patch_level"] = args.patch_level
        d.attrs["downsample"] = np.array(dss[args.patch_level], dtype=np.float64)
        d.attrs["level_dim"] = np.array(dims[args.patch_level], dtype=np.int64)
        d.attrs["downsampled_level_dim"] = np.array(dims[args.patch_level], dtype=np.int64)
        d.attrs["name"] = name

    if args.contours_json:
        doc = {
            "seg_level": seg_level,
            "downsample": list(seg_ds),
            "contours": [c.reshape(-1, 2).tolist() for c in contours],
            "holes": [[hh.reshape(-1, 2).tolist() for hh in hs] for hs in holes],
        }
        with open(args.contours_json, "w") as fh:
            json.dump(doc, fh)

    print(f"{name}: {len(coords)} patches from {len(contours)} contours "
          f"({sum(len(h) for h in holes)} holes), preset {args.preset}, "
          f"segmentation level {seg_level} ({sw} x {sh})")


if __name__ == "__main__":
    main()
