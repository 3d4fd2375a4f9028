#!/bin/sh
# wsi-clam-check.sh SRCDIR MEXD_EXE: `mexd tiles` gives CLAM's patch coordinates bit for bit.
# Two synthetic slides from tests/data/make-slide.sh:
#   a: seed 32, 8192 x 6144, porous tissue (one large piece with holes of many sizes, small
#      pieces), Aperio flavour: presets default, tcga and bwh_biopsy;
#   b: seed 13, 5000 x 3700 (levels that are not exact halves, so the per-axis downsamples
#      differ), two pieces, a hole and a lesion, generic-TIFF flavour: presets tcga, bwh_biopsy.
# For each case tests/reference/clam_patch.py (an independent implementation of CLAM's rules)
# and `mexd tiles SLIDE --preset P --size 256 --out ours.h5 --geojson ours.geojson` must give
# the same non-empty `coords` (same order) and the same patch_size / patch_level attributes;
# the GeoJSON must hold one tissue polygon per kept contour with the reference's areas (outer
# ring and holes, shoelace, level-0 pixels) and one tile feature per coordinate.
# Exit 77 (skipped) where vips, tiffset or Debian's python3 with cv2, openslide and h5py is
# missing.
src=${1:?usage: wsi-clam-check.sh SRCDIR MEXD_EXE}
exe=${2:?usage: wsi-clam-check.sh SRCDIR MEXD_EXE}
for t in vips tiffset; do
  command -v $t >/dev/null 2>&1 || { echo "$t is not installed: skipped"; exit 77; }
done
/usr/bin/python3 -c 'import cv2, openslide, h5py, numpy' 2>/dev/null ||
  { echo "/usr/bin/python3 with cv2, openslide, h5py and numpy is missing: skipped"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP

gen() {
  sh "$src/tests/data/make-slide.sh" "$@" >/dev/null || { echo "FAIL: make-slide.sh $*"; exit 1; }
}
gen "$tmp/a" --seed 32 --width 8192 --height 6144 --blob 192 --coverage 0.7 --flavour aperio
gen "$tmp/b" --seed 13 --width 5000 --height 3700 --blob 256 --coverage 0.5 \
  --lesion 2900,1500,900,700 --flavour generic

fail=0
check() { # check SLIDE PRESET NAME
  ref=$tmp/$3-$2-ref
  ours=$tmp/$3-$2-ours
  /usr/bin/python3 "$src/tests/reference/clam_patch.py" "$1" --preset "$2" --patch-size 256 \
    --out "$ref.h5" --contours-json "$ref.json" >/dev/null ||
    { echo "FAIL: $3 $2: the reference failed"; fail=1; return; }
  "$exe" tiles "$1" --preset "$2" --size 256 --out "$ours.h5" --geojson "$ours.geojson" \
    >"$ours.log" 2>&1 ||
    { echo "FAIL: $3 $2: mexd tiles exited with $?"; cat "$ours.log"; fail=1; return; }
  /usr/bin/python3 - "$ref" "$ours" "$3 $2" <<'EOF' || fail=1
import json, sys
import h5py
import numpy as np

ref, ours, name = sys.argv[1:4]
with h5py.File(ref + ".h5", "r") as f:
    rc, ra = f["coords"][:], dict(f["coords"].attrs)
with h5py.File(ours + ".h5", "r") as f:
    if "coords" not in f:
        sys.exit(f"FAIL: {name}: no coords dataset in ours")
    oc, oa = f["coords"][:], dict(f["coords"].attrs)
bad = []
if len(rc) == 0:
    bad.append("the reference found no patches (test slide problem)")
if oc.ndim != 2 or oc.shape[1:] != (2,) or oc.dtype.kind not in "iu":
    bad.append(f"coords is {oc.dtype} {oc.shape}, want N x 2 integers")
elif oc.shape != rc.shape or not np.array_equal(oc.astype(np.int64), rc):
    n = min(len(oc), len(rc))
    diff = np.flatnonzero((oc[:n].astype(np.int64) != rc[:n]).any(axis=1))
    first = int(diff[0]) if len(diff) else n
    rs, os_ = set(map(tuple, rc.tolist())), set(map(tuple, oc.tolist()))
    bad.append(f"coords differ: {len(oc)} ours, {len(rc)} reference, first difference at row "
               f"{first} (ours {oc[first].tolist() if first < len(oc) else None}, reference "
               f"{rc[first].tolist() if first < len(rc) else None}); {len(os_ - rs)} only ours, "
               f"{len(rs - os_)} only in the reference")
for key in ("patch_size", "patch_level"):
    if key not in oa or int(np.asarray(oa[key]).ravel()[0]) != int(ra[key]):
        bad.append(f"attribute {key}: ours {oa.get(key)}, reference {ra[key]}")

# GeoJSON: tissue polygons against the reference's contours, tile features against coords.
def area(ring):
    p = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0

cont = json.load(open(ref + ".json"))
try:
    gj = json.load(open(ours + ".geojson"))
    polys, tiles = [], 0
    for feat in gj["features"]:
        props, geom = feat.get("properties") or {}, feat.get("geometry") or {}
        if props.get("objectType") == "tile":
            tiles += 1
        elif (props.get("classification") or {}).get("name") == "Tissue":
            polys.extend([geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"])
except (OSError, ValueError, KeyError, TypeError) as e:
    bad.append(f"GeoJSON unreadable: {e!r}")
else:
    if tiles != len(oc):
        bad.append(f"GeoJSON has {tiles} tile features for {len(oc)} coords")
    if len(polys) != len(cont["contours"]):
        bad.append(f"GeoJSON has {len(polys)} tissue polygons, the reference kept "
                   f"{len(cont['contours'])} contours")
    else:
        for i, (rings, c, hs) in enumerate(zip(polys, cont["contours"], cont["holes"])):
            want = [area(c)] + sorted((area(h) for h in hs), reverse=True)
            got = [area(rings[0])] + sorted((area(r) for r in rings[1:]), reverse=True)
            if len(got) != len(want) or any(abs(g - w) > 0.5 for g, w in zip(got, want)):
                bad.append(f"tissue polygon {i}: areas {got[:4]}, reference {want[:4]} "
                           f"({len(got) - 1} vs {len(want) - 1} holes)")
                break

if bad:
    for b in bad:
        print(f"FAIL: {name}: {b}")
    sys.exit(1)
nh = sum(len(h) for h in cont["holes"])
print(f"ok: {name}: {len(oc)} patches, {len(cont['contours'])} contours, {nh} holes")
EOF
}

check "$tmp/a/synth.svs" default a
check "$tmp/a/synth.svs" tcga a
check "$tmp/a/synth.svs" bwh_biopsy a
check "$tmp/b/generic.tif" tcga b
check "$tmp/b/generic.tif" bwh_biopsy b
exit $fail
