#!/bin/sh
# demo-check.sh MEXD_EXE: `mexd demo` from nothing: it finishes (the README promises under 10
# minutes on 2 cores), prints a prediction for every held-out slide, and each tumor slide's
# heatmap highlights its lesion: the mean tile score inside the lesion rectangle (demo.json)
# exceeds the mean outside.  Skipped (77) without vips/tiffset.
set -eu
# under AddressSanitizer: full stacks for allocations (the command runs GStreamer in-process),
# so that .ci/lsan.supp recognises GLib's intentional leak of its first quark table
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
mexd=$1
command -v vips >/dev/null 2>&1 && command -v tiffset >/dev/null 2>&1 ||
  { echo "demo-check: skipped: no vips/tiffset"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)
"$mexd" demo --out "$tmp/demo" --device cpu >"$tmp/table.txt" 2>"$tmp/log.txt" ||
  { cat "$tmp/log.txt"; exit 1; }
t1=$(date +%s)
cat "$tmp/table.txt"
echo "demo: $((t1 - t0)) s"
[ $((t1 - t0)) -lt 600 ] || { echo "demo-check: the demo took more than 10 minutes"; exit 1; }
/usr/bin/python3 - "$tmp/demo" "$tmp/table.txt" <<'PY'
import json, sys
root, table = sys.argv[1], open(sys.argv[2]).read()
d = json.load(open(f"{root}/demo.json"))
tests = [s for s in d["slides"] if s["split"] == "test"]
for s in tests:
    assert s["slide_id"] in table, f"{s['slide_id']} not in the table"
    for f in ("result.json", "heatmap.png", "tiles.geojson", "features.h5"):
        open(f"{root}/classify/{s['slide_id']}/{f}", "rb").close()
for s in tests:
    if s["label"] != "tumor":
        continue
    x, y, w, h = s["lesion"]
    g = json.load(open(f"{root}/classify/{s['slide_id']}/tiles.geojson"))
    ins, out = [], []
    for f in g["features"]:
        r = f["geometry"]["coordinates"][0]
        cx, cy = (r[0][0] + r[2][0]) / 2, (r[0][1] + r[2][1]) / 2
        (ins if x <= cx < x + w and y <= cy < y + h else out).append(f["properties"]["score"])
    assert ins and out, (s["slide_id"], len(ins), len(out))
    mi, mo = sum(ins) / len(ins), sum(out) / len(out)
    print(f"  {s['slide_id']}: mean score {mi:.4g} on the {len(ins)} lesion tiles, {mo:.4g} on the {len(out)} others")
    assert mi > mo, f"{s['slide_id']}: the heatmap does not highlight the lesion"
PY
