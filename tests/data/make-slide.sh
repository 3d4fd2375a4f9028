#!/bin/sh
# make-slide.sh OUT_DIR [--seed N] [--width W] [--height H] [--lesion X,Y,W,H]
#               [--flavour aperio|generic|both] [--mpp 0.5] [--mag 20] [--hole X,Y,W,H]
#               [--blob PX] [--coverage F] [--min-piece PX2] [--min-hole PX2] [--quality Q]
#
# A synthetic pyramidal whole-slide image with known tissue, for tests (recipe: the project's
# design notes WSI.md, "Test slides"). Deterministic: the same arguments give the same bytes.
# Defaults: seed 7, 4096 x 3072, mpp 0.5, 20x, --blob 384, --coverage 0.4, JPEG Q 85, both.
#   - texture: tests/data/ihc-crop.png (a crop of skimage's ihc.png) repeated over the slide;
#   - tissue: seeded Gaussian noise (numpy PCG64) on a grid of blob/3-pixel cells, Gaussian blur
#     of 3 cells, bicubic upsampling to 1/8 of level 0, thresholded at the quantile that leaves
#     --coverage of the slide as tissue; optionally cleaned (tissue pieces smaller than
#     --min-piece and enclosed holes smaller than --min-hole level-0 pixels removed); --hole:
#     then background in the ellipse inscribed in that level-0 rectangle; softened (Gaussian,
#     sigma 8 level-0 pixels) and linearly upsampled to a 0..255 blend weight of texture over
#     RGB 242;
#   - --lesion X,Y,W,H: that level-0 rectangle (clipped to the slide) gets a different texture
#     (the crop rotated 90°, red and blue swapped) and is tissue whatever the noise says;
#   - a JPEG (Q 85) tiled (256²) pyramidal TIFF written by vips: OUT_DIR/generic.tif (generic
#     TIFF with XResolution/ResolutionUnit = centimetre, so µm/px = 10000 / XResolution) and/or
#     OUT_DIR/synth.svs (the same with an Aperio ImageDescription, set by tiffset, so OpenSlide
#     reports vendor aperio, openslide.mpp-x and openslide.objective-power).
# Ground truth: OUT_DIR/truth.json (see "mask_rule" in it; cells = [x, y, fraction] for each
# 256² level-0 cell, row-major, fraction over the part inside the slide) and
# OUT_DIR/truth-mask.png (1-bit, level-0 size, tissue = white).
# Needs vips (libvips-tools), tiffset (libtiff-tools) and /usr/bin/python3 with numpy and cv2.
set -eu

me=make-slide.sh
die() { echo "$me: $*" >&2; exit 1; }
usage() {
  sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 1 ] || usage
out=$1; shift
case $out in -*) usage ;; esac
seed=7 width=4096 height=3072 lesion='' hole='' flavour=both mpp=0.5 mag=20
blob=384 coverage=0.4 minpiece=0 minhole=0 quality=85
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "option $1 needs a value"
  case $1 in
    --seed) seed=$2 ;;
    --width) width=$2 ;;
    --height) height=$2 ;;
    --lesion) lesion=$2 ;;
    --hole) hole=$2 ;;
    --flavour|--flavor) flavour=$2 ;;
    --mpp) mpp=$2 ;;
    --mag) mag=$2 ;;
    --blob) blob=$2 ;;
    --coverage) coverage=$2 ;;
    --min-piece) minpiece=$2 ;;
    --min-hole) minhole=$2 ;;
    --quality) quality=$2 ;;
    *) die "unknown option $1" ;;
  esac
  shift 2
done
case $flavour in aperio|generic|both) ;; *) die "--flavour must be aperio, generic or both" ;; esac
for n in "$seed" "$width" "$height" "$blob" "$minpiece" "$minhole" "$quality"; do
  case $n in ''|*[!0-9]*) die "not a non-negative integer: '$n'" ;; esac
done

command -v vips >/dev/null 2>&1 || die "vips not found (Debian: apt-get install libvips-tools)"
command -v tiffset >/dev/null 2>&1 || die "tiffset not found (Debian: apt-get install libtiff-tools)"
[ -x /usr/bin/python3 ] || die "/usr/bin/python3 not found"
/usr/bin/python3 -c 'import numpy, cv2' 2>/dev/null ||
  die "/usr/bin/python3 lacks numpy or cv2 (Debian: apt-get install python3-numpy python3-opencv)"

here=$(cd "$(dirname "$0")" && pwd)
crop=$here/ihc-crop.png
[ -r "$crop" ] || die "$crop not found"
mkdir -p "$out" || die "cannot create $out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/make-slide.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP

# vips' --xres is in pixels per millimetre whatever --resunit says.
res=$(awk -v m="$mpp" 'BEGIN { if (m + 0 <= 0) exit 1; printf "%.12g", 1000 / m }') ||
  die "bad --mpp '$mpp'"

# Python draws the mask, writes truth.json and truth-mask.png, and streams the slide's pixels
# (texture with the lesion texture inserted, blended over RGB 242 by the weight) as a PPM to vips,
# which writes the pyramid.  A POSIX pipe loses python's status: it leaves a file when it is done.
/usr/bin/python3 - "$out" "$tmp" "$crop" "$seed" "$width" "$height" "$lesion" "$mpp" "$mag" \
  "$blob" "$coverage" "$minpiece" "$minhole" "$hole" <<'EOF' |
import json, os, sys
import numpy as np
import cv2

out, tmp, crop = sys.argv[1:4]
seed, W, H = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
lesion_arg, mpp, mag = sys.argv[7], float(sys.argv[8]), float(sys.argv[9])
blob, coverage = int(sys.argv[10]), float(sys.argv[11])
min_piece, min_hole, hole_arg = int(sys.argv[12]), int(sys.argv[13]), sys.argv[14]
if W < 1 or H < 1:
    sys.exit("width and height must be positive")
if not 0.0 < coverage < 1.0:
    sys.exit("--coverage must be in (0, 1)")


def rect(arg, opt):
    if not arg:
        return None
    try:
        r = [int(v) for v in arg.split(",")]
    except ValueError:
        r = []
    if len(r) != 4 or min(r) < 0 or r[2] == 0 or r[3] == 0:
        sys.exit(f"{opt} wants X,Y,W,H (non-negative integers, W and H > 0)")
    if r[0] >= W or r[1] >= H:
        sys.exit(f"{opt} starts outside the slide")
    return r


lesion = rect(lesion_arg, "--lesion")
if lesion is not None:
    lesion[2] = min(lesion[2], W - lesion[0])
    lesion[3] = min(lesion[3], H - lesion[1])
hole = rect(hole_arg, "--hole")

# The tissue mask is designed at 1/S of level 0.
S = 8
cell = max(S, (blob // 3) // S * S)     # noise cell, level-0 pixels (a multiple of S)
lw, lh = -(-W // S), -(-H // S)
gw, gh = -(-W // cell) + 2, -(-H // cell) + 2
rng = np.random.default_rng(seed)
noise = rng.standard_normal((gh, gw))
z = cv2.GaussianBlur(noise, (0, 0), 3.0, borderType=cv2.BORDER_REFLECT_101)
f = cv2.resize(z, (gw * cell // S, gh * cell // S), interpolation=cv2.INTER_CUBIC)[:lh, :lw]
thr = np.quantile(f, 1.0 - coverage)
tissue = (f > thr).astype(np.uint8)
px = S * S                              # level-0 pixels per design pixel
if min_piece > 0:
    n, lab, st, _ = cv2.connectedComponentsWithStats(tissue, connectivity=8)
    small = np.flatnonzero(st[:, cv2.CC_STAT_AREA] * px < min_piece)
    tissue[np.isin(lab, small[small > 0])] = 0
if min_hole > 0:
    n, lab, st, _ = cv2.connectedComponentsWithStats(1 - tissue, connectivity=4)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    small = np.flatnonzero(st[:, cv2.CC_STAT_AREA] * px < min_hole)
    tissue[np.isin(lab, small[(small > 0) & ~np.isin(small, edge)])] = 1
if hole is not None:
    x, y, w, h = hole
    cv2.ellipse(tissue, (((x + w / 2) / S - 0.5, (y + h / 2) / S - 0.5), (w / S, h / S), 0.0),
                0, -1)
soft = cv2.GaussianBlur(tissue.astype(np.float32) * 255.0, (0, 0), 1.0,
                        borderType=cv2.BORDER_REPLICATE)
soft = np.clip(np.rint(soft), 0, 255).astype(np.uint8)
weight = np.ascontiguousarray(
    cv2.resize(soft, (lw * S, lh * S), interpolation=cv2.INTER_LINEAR)[:H, :W])
if lesion is not None:
    x, y, w, h = lesion
    weight[y:y + h, x:x + w] = 255

# Ground truth.
mask = weight >= 128
C = 256
nx, ny = -(-W // C), -(-H // C)
pad = np.zeros((ny * C, nx * C), np.uint8)
pad[:H, :W] = mask
counts = pad.reshape(ny, C, nx, C).sum(axis=(1, 3), dtype=np.int64)
del pad
cells = []
for j in range(ny):
    ch = min(C, H - j * C)
    for i in range(nx):
        cw = min(C, W - i * C)
        cells.append([i * C, j * C, round(int(counts[j, i]) / (cw * ch), 6)])
total = int(counts.sum())
truth = {
    "width": W, "height": H, "seed": seed, "mpp": mpp,
    "mag": int(mag) if mag == int(mag) else mag,
    "blob": blob, "coverage": coverage, "min_piece": min_piece, "min_hole": min_hole,
    "hole": hole,
    "mask_rule": "tissue = level-0 pixels whose 8-bit blend weight of texture over the RGB 242 "
                 "background is >= 128 (the lesion rectangle has weight 255); truth-mask.png "
                 "is that mask",
    "tissue_fraction": round(total / (W * H), 6),
    "lesion": lesion,
    "cell": C,
    "cells_order": "row-major (y outer, x inner); fraction over the part of the cell inside "
                   "the slide",
    "cells": cells,
}
with open(os.path.join(out, "truth.json"), "w") as fh:
    json.dump(truth, fh, separators=(",", ":"))
    fh.write("\n")
if not cv2.imwrite(os.path.join(out, "truth-mask.png"), mask.view(np.uint8) * 255,
                   [cv2.IMWRITE_PNG_BILEVEL, 1]):
    sys.exit("cannot write truth-mask.png")
del mask

# Pixels, as a binary PPM on stdout, 256 rows at a time.  Lesion texture: the crop rotated 90°
# clockwise with red and blue swapped (blue glands instead of brown ones, as saturated as the
# texture at every scale), repeated from the lesion's top-left corner.
tex = np.ascontiguousarray(cv2.imread(crop, cv2.IMREAD_COLOR)[:, :, ::-1])     # RGB
les = np.ascontiguousarray(cv2.rotate(tex, cv2.ROTATE_90_CLOCKWISE)[:, :, ::-1])
stream = sys.stdout.buffer
stream.write(b"P6\n%d %d\n255\n" % (W, H))
texrows = np.ascontiguousarray(tex[:, np.arange(W) % tex.shape[1]])   # one band of rows
if lesion is not None:
    lx, ly, lwid, lhgt = lesion
    lesrows = np.ascontiguousarray(les[:, np.arange(lwid) % les.shape[1]])
for y0 in range(0, H, 256):
    y1 = min(H, y0 + 256)
    rgb = texrows[np.arange(y0, y1) % tex.shape[0]]
    if lesion is not None and y0 < ly + lhgt and y1 > ly:
        a, b = max(y0, ly), min(y1, ly + lhgt)
        rgb[a - y0:b - y0, lx:lx + lwid] = lesrows[np.arange(a - ly, b - ly) % les.shape[0]]
    w = weight[y0:y1]
    part = (w > 0) & (w < 255)
    ww = w[part].astype(np.uint16)[:, None]
    blend = (ww * rgb[part] + (255 - ww) * np.uint16(242) + np.uint16(127)) // np.uint16(255)
    rgb[w == 0] = 242
    rgb[part] = blend.astype(np.uint8)
    stream.write(rgb.tobytes())
stream.flush()

with open(os.path.join(tmp, "summary"), "w") as fh:
    fh.write(f"{W}x{H} seed {seed}: tissue {100.0 * total / (W * H):.1f} %, "
             f"{sum(1 for c in cells if c[2] > 0)} of {len(cells)} cells touch tissue, "
             f"{sum(1 for c in cells if c[2] >= 0.5)} are >= 50 % tissue\n")
EOF
vips copy stdin "$tmp/slide.tif[tile,tile-width=256,tile-height=256,pyramid,compression=jpeg,Q=$quality,strip,xres=$res,yres=$res,resunit=cm]" \
  2>"$tmp/vips.err" || vips_failed=1
[ -f "$tmp/summary" ] || die "mask or pixel generation failed"
[ -z "${vips_failed-}" ] || { cat "$tmp/vips.err" >&2; die "vips failed to write the slide"; }

if [ "$flavour" != generic ]; then
  cp "$tmp/slide.tif" "$tmp/synth.svs"
  desc=$(printf 'Aperio Image Library v12.0.15\r\n%sx%s [0,0 %sx%s] (256x256) JPEG/RGB Q=%s|AppMag = %s|MPP = %s' \
    "$width" "$height" "$width" "$height" "$quality" "$mag" "$mpp")
  tiffset -s 270 "$desc" "$tmp/synth.svs" || die "tiffset failed"
  mv "$tmp/synth.svs" "$out/synth.svs"
fi
if [ "$flavour" != aperio ]; then
  mv "$tmp/slide.tif" "$out/generic.tif"
fi
cat "$tmp/summary"
