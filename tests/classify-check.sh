#!/bin/sh
# classify-check.sh SRCDIR MEXD_EXE: `mexd classify` on three generated slides.
#   - every output of every slide (result.json, features.h5, heatmap.png, tiles.geojson) and the
#     summary; each slide's result equals `mexd extract --slide` + `mexd forward` (same seed);
#   - killed after the first slide (MEXD_CLASSIFY_KILL_AFTER=1) and rerun, it classifies only the
#     two others and ends with the same summary as an uninterrupted run;
#   - --shard 0/2 and --shard 1/2 classify every slide of the manifest exactly once, and --merge
#     builds the same summary;
#   - bad usage and bad input: one clear line, a non-zero exit.
# Needs vips and tiffset for the slides (tests/data/make-slide.sh); skipped (77) without them.
set -eu
# under AddressSanitizer: full stacks for allocations (the command runs GStreamer in-process),
# so that .ci/lsan.supp recognises GLib's intentional leak of its first quark table
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
src=$1
mexd=$2
command -v vips >/dev/null 2>&1 && command -v tiffset >/dev/null 2>&1 ||
  { echo "classify-check: skipped: no vips/tiffset"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "classify-check: $*" >&2; exit 1; }
i=0
for seed in 7 12 14; do # seeds whose tissue passes CLAM's tcga area filter at this size
  i=$((i + 1))
  sh "$src/tests/data/make-slide.sh" "$tmp/g$i" --seed $seed --width 4096 --height 3072 \
    --flavour aperio >/dev/null
  mv "$tmp/g$i/synth.svs" "$tmp/slide$i.svs"
done
bb="$src/tests/fixtures/gst/vit-d32.safetensors"
model="$src/tests/fixtures/mexd/model-e2.safetensors"
opts="--preset tcga --device cpu --chains 8 --seed 3 --heatmap-width 384"
S="$tmp/slide1.svs $tmp/slide2.svs $tmp/slide3.svs"

# ---- a whole run ----
"$mexd" classify $S --backbone "$bb" --model "$model" --out "$tmp/a" $opts --quiet
for k in 1 2 3; do
  for f in result.json features.h5 heatmap.png tiles.geojson; do
    [ -s "$tmp/a/slide$k/$f" ] || fail "slide$k: no $f"
  done
done
[ "$(wc -l <"$tmp/a/summary.csv")" -eq 4 ] || fail "summary.csv has not 3 rows"
"$mexd" extract --backbone "$bb" --slide "$tmp/slide2.svs" --preset tcga --device cpu \
  --out "$tmp/f2.h5" -q
"$mexd" forward --model "$model" --features "$tmp/f2.h5" --device cpu --seed 3 --chains 8 \
  --json >"$tmp/r2.json"
/usr/bin/python3 - "$tmp" <<'PY' || fail "outputs"
import json, sys
tmp = sys.argv[1]
r = json.load(open(f"{tmp}/a/slide2/result.json"))
ref = json.load(open(f"{tmp}/r2.json"))
err = max(abs(a - b) for a, b in zip(r["probabilities"], ref["probabilities"]))
assert err < 1e-6, (r["probabilities"], ref["probabilities"])
g = json.load(open(f"{tmp}/a/slide2/tiles.geojson"))
assert g["type"] == "FeatureCollection" and len(g["features"]) == r["tiles"], (len(g["features"]), r["tiles"])
for f in g["features"]:
    ring = f["geometry"]["coordinates"][0]
    assert len(ring) == 5 and ring[0] == ring[-1]
    assert 0 <= f["properties"]["gate"] <= 1  # a router's gate
    assert -0.5 < f["properties"]["score"] < 1.5  # attention weights (sum ~1 over the slide)
try:
    from PIL import Image
    im = Image.open(f"{tmp}/a/slide2/heatmap.png")
    assert im.size == (384, 288) and im.mode == "RGB", (im.size, im.mode)
except ImportError:
    pass
try:
    import h5py
    with h5py.File(f"{tmp}/a/slide2/features.h5") as h, h5py.File(f"{tmp}/f2.h5") as e:
        assert (h["features"][:] == e["features"][:]).all() and (h["coords"][:] == e["coords"][:]).all()
except ImportError:
    pass
print(f"classify: slide2 = extract + forward (max |Δp| {err:.1e}); {r['tiles']} scored tiles; heatmap 384 x 288")
PY

# ---- a calibrated model (issue 19: mexd eval --calibrate writes one): calibrated probabilities
# and the referral in result.json; the model file is this test's own copy with the entry added ----
/usr/bin/python3 - "$tmp" "$model" <<'PY' || fail "making the calibrated model"
import json, struct, sys
tmp, model = sys.argv[1], sys.argv[2]
sp = sorted(json.load(open(f"{tmp}/a/slide{k}/result.json"))["spread"][
    json.load(open(f"{tmp}/a/slide{k}/result.json"))["class_index"]] for k in (1, 2, 3))
thr = (sp[0] + sp[1]) / 2  # slide with the smallest spread kept, the two others referred
b = open(model, "rb").read()
hl = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + hl])
fitted = {"sampler": "card", "chains": 8, "sample_seed": 3}  # those of $opts
for name, cal in (("cal", {"temperature": 2.5, "refer_spread": thr, "coverage": 0.5, "slides": 3,
                           "fitted_on": fitted}),
                  ("badcal", {"temperature": 0, "slides": 3})):
    h["__metadata__"]["mexd.calibration"] = json.dumps(cal)
    hb = json.dumps(h).encode()
    hb += b" " * (-len(hb) % 8)
    open(f"{tmp}/{name}.safetensors", "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + hl:])
PY
"$mexd" classify $S --backbone "$bb" --model "$tmp/cal.safetensors" --out "$tmp/k" $opts \
  2>"$tmp/clog"
/usr/bin/python3 - "$tmp" <<'PY' || fail "the calibrated results"
import json, math, sys
tmp = sys.argv[1]
cal = None
for k in (1, 2, 3):
    r = json.load(open(f"{tmp}/k/slide{k}/result.json"))
    a = json.load(open(f"{tmp}/a/slide{k}/result.json"))
    assert r["probabilities"] == a["probabilities"], k  # the same model otherwise
    c = r["calibration"]
    T = c["temperature"]
    l = [math.log(max(p, 1e-12)) / T for p in r["probabilities"]]
    z = sum(math.exp(v - max(l)) for v in l)
    want = [math.exp(v - max(l)) / z for v in l]
    assert max(abs(x - y) for x, y in zip(c["probabilities"], want)) < 1e-12, (c, want)
    assert c["refer"] == (r["spread"][r["class_index"]] > c["refer_spread"]), (k, c)
    assert "calibration" not in a
print("classify: a calibrated model's results carry tempered probabilities and the referral")
PY
[ "$(grep -c "REFER" "$tmp/clog")" -eq 2 ] || fail "expected 2 slides flagged REFER: $(cat "$tmp/clog")"
# without --chains and --seed the calibrated model runs with those its referral was fitted with
# (the same results as above); another --seed is refused before any work
"$mexd" classify "$tmp/slide1.svs" --backbone "$bb" --model "$tmp/cal.safetensors" \
  --out "$tmp/kd" --preset tcga --device cpu --heatmap-width 384 --quiet ||
  fail "classify with the calibration's own sampler settings"
/usr/bin/python3 -c 'import json, sys; a, b = (json.load(open(p)) for p in sys.argv[1:]); \
assert a["probabilities"] == b["probabilities"] and a["calibration"] == b["calibration"], (a, b)' \
  "$tmp/k/slide1/result.json" "$tmp/kd/slide1/result.json" ||
  fail "classify did not use the calibration's sampler settings"
set +e
"$mexd" classify "$tmp/slide1.svs" --backbone "$bb" --model "$tmp/cal.safetensors" \
  --out "$tmp/ks" --preset tcga --device cpu --chains 8 --seed 4 --quiet 2>"$tmp/err"
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "fitted with --seed 3" "$tmp/err" && [ ! -e "$tmp/ks" ] ||
  fail "another --seed than the calibration's: exit $rc, $(cat "$tmp/err")"
set +e
"$mexd" classify "$tmp/slide1.svs" --backbone "$bb" --model "$tmp/badcal.safetensors" \
  --out "$tmp/kb" $opts --quiet 2>"$tmp/err"
rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q "mexd.calibration" "$tmp/err" && [ ! -e "$tmp/kb/slide1" ] ||
  fail "a bad calibration: exit $rc, $(cat "$tmp/err")"

# ---- killed after the first slide, rerun ----
set +e
MEXD_CLASSIFY_KILL_AFTER=1 "$mexd" classify $S --backbone "$bb" --model "$model" --out "$tmp/b" \
  $opts --quiet 2>/dev/null
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "the killed run exited 0"
[ -s "$tmp/b/slide1/result.json" ] && [ ! -e "$tmp/b/slide2/result.json" ] ||
  fail "killed after the first slide: expected slide1 done, slide2 not"
"$mexd" classify $S --backbone "$bb" --model "$model" --out "$tmp/b" $opts 2>"$tmp/log"
grep -q "slide1: done before, skipped" "$tmp/log" || fail "slide1 was not skipped: $(cat "$tmp/log")"
[ "$(grep -c "tiles/s" "$tmp/log")" -eq 2 ] || fail "the rerun did not classify exactly 2 slides"
cmp "$tmp/a/summary.csv" "$tmp/b/summary.csv" || fail "resumed summary differs"
echo "classify: killed after slide 1 and rerun: slide 1 skipped, 2 classified, same summary"

# ---- shards ----
printf 'path\n%s\n%s\n%s\n' "$tmp/slide1.svs" "$tmp/slide2.svs" "$tmp/slide3.svs" >"$tmp/m.csv"
for I in 0 1; do
  "$mexd" classify --manifest "$tmp/m.csv" --shard $I/2 --backbone "$bb" --model "$model" \
    --out "$tmp/c" $opts 2>"$tmp/shard$I.log"
done
cat "$tmp/shard0.log" "$tmp/shard1.log" | grep "tiles/s" | sed 's/.*\] \([^:]*\):.*/\1/' | sort >"$tmp/ids"
printf 'slide1\nslide2\nslide3\n' | cmp - "$tmp/ids" || fail "shards did not cover the manifest once: $(cat "$tmp/ids")"
[ ! -e "$tmp/c/summary.csv" ] || fail "a shard wrote summary.csv"
"$mexd" classify --merge --manifest "$tmp/m.csv" --out "$tmp/c" --model "$model"
cmp "$tmp/a/summary.csv" "$tmp/c/summary.csv" || fail "merged summary differs from one run's"
echo "classify: --shard 0/2 + 1/2 cover the manifest exactly once; --merge = one run's summary"

# ---- errors ----
expect() { # code needle command…
  code=$1 needle=$2
  shift 2
  set +e
  "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  set -e
  [ "$rc" -eq "$code" ] || fail "$*: exit $rc, expected $code ($(cat "$tmp/err"))"
  grep -q -- "$needle" "$tmp/err" || fail "$*: no \"$needle\" in: $(cat "$tmp/err")"
}
expect 2 "give the slides" "$mexd" classify --backbone "$bb" --model "$model"
expect 2 "--shard" "$mexd" classify --manifest "$tmp/m.csv" --shard 2/2 --backbone "$bb" --model "$model"
expect 2 "--shard needs --manifest" "$mexd" classify "$tmp/slide1.svs" --shard 0/2 --backbone "$bb" --model "$model"
expect 2 "--backbone" "$mexd" classify "$tmp/slide1.svs" --model "$model"
expect 1 "nope.svs: no such file" "$mexd" classify "$tmp/nope.svs" --backbone "$bb" --model "$model" --out "$tmp/e" $opts --quiet
printf 'not a slide' >"$tmp/fake.svs"
expect 1 "fake.svs" "$mexd" classify "$tmp/fake.svs" --backbone "$bb" --model "$model" --out "$tmp/e2" $opts --quiet
expect 1 "not a MExD model" "$mexd" classify "$tmp/slide1.svs" --backbone "$bb" --model "$bb" --out "$tmp/e3"
expect 1 "same slide id" "$mexd" classify "$tmp/slide1.svs" "$tmp/g1/../slide1.svs" --backbone "$bb" --model "$model" --out "$tmp/e4"
expect 1 "none.csv: no such file (the manifest)" "$mexd" classify --manifest "$tmp/none.csv" --backbone "$bb" --model "$model"

# ---- a result is reused only for exactly what produced it ----
# two slides (under AddressSanitizer every run costs seconds); several settings change per run,
# and the message must name each of them
S2="$tmp/slide1.svs $tmp/slide2.svs"
count() { grep -c "$1" "$tmp/log" || true; }
run_i() { # args…: classify S2 into $tmp/i
  "$mexd" classify $S2 --backbone "$bb" --model "$model" --out "$tmp/i" "$@" 2>"$tmp/log" ||
    fail "run with $*: $(cat "$tmp/log")"
}
check_again() { # n "reason|reason…" args…: n slides classified again, the message naming each
  n=$1 why=$2
  shift 2
  run_i "$@"
  [ "$(count 'classified again')" -eq "$n" ] && [ "$(count 'done before, skipped')" -eq $((2 - n)) ] ||
    fail "with $*: expected $n slides classified again: $(cat "$tmp/log")"
  echo "$why" | tr '|' '\n' | while read -r w; do
    [ "$(count "$w")" -eq "$n" ] || fail "with $*: \"$w\" not said for $n slides: $(cat "$tmp/log")"
  done
}
run_i $opts
run_i $opts
[ "$(count 'done before, skipped')" -eq 2 ] && [ "$(count 'classified again')" -eq 0 ] ||
  fail "an identical rerun recomputed: $(cat "$tmp/log")"
check_again 2 "seed 3 → 4|chains 8 → 6|heatmap_width 384 → 400" --preset tcga --device cpu --chains 6 --heatmap-width 400 --seed 4
check_again 2 "sampler card → ddim|steps (none) → 20|eta (none) → 0.5|seed 4 → 3|chains 6 → 8|heatmap_width 400 → 384" $opts --sampler ddim --steps 20 --eta 0.5
check_again 2 "steps 20 → 25" $opts --sampler ddim --steps 25 --eta 0.5
check_again 2 "tile_size 256 → 224|preset tcga → bwh_biopsy|grid level 0 → magnification 20|sampler ddim → card" --preset bwh_biopsy --size 224 --mag 20 --device cpu --chains 8 --seed 3 --heatmap-width 384
check_again 2 "grid magnification 20 → level 0" $opts
# one slide's content changes (same path): that slide only, and back
cp "$tmp/slide2.svs" "$tmp/slide2.orig"
cp "$tmp/slide3.svs" "$tmp/slide2.svs"
check_again 1 "slide quickhash-1" $opts
cp "$tmp/slide2.orig" "$tmp/slide2.svs"
check_again 1 "slide quickhash-1" $opts
# the model's bytes change (same weights, another metadata entry): every slide
/usr/bin/python3 - "$model" "$tmp/model2.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h.setdefault("__metadata__", {})["note"] = "another file"
hb = json.dumps(h).encode()
hb += b" " * ((8 - len(hb) % 8) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
"$mexd" classify $S2 --backbone "$bb" --model "$tmp/model2.safetensors" --out "$tmp/i" $opts \
  2>"$tmp/log" || fail "model2: $(cat "$tmp/log")"
[ "$(count 'classified again: its result was made otherwise: model sha256')" -eq 2 ] ||
  fail "a changed model file did not recompute every slide: $(cat "$tmp/log")"
# --merge refuses results of another model
printf 'path\n%s\n%s\n' "$tmp/slide1.svs" "$tmp/slide2.svs" >"$tmp/m2.csv"
"$mexd" classify --merge --manifest "$tmp/m2.csv" --out "$tmp/i" --model "$model" \
  2>"$tmp/log" && fail "merge of another model's results succeeded"
grep -q "other inputs or settings" "$tmp/log" || fail "merge with another model: $(cat "$tmp/log")"
check_again 2 "model sha256" $opts
# a damaged result, a missing output: that slide only; --force: all
head -c 100 "$tmp/i/slide2/result.json" >"$tmp/r.json" && mv "$tmp/r.json" "$tmp/i/slide2/result.json"
check_again 1 "its result cannot be used" $opts
rm "$tmp/i/slide1/heatmap.png"
check_again 1 "heatmap.png is missing" $opts
check_again 2 "force" $opts --force
head -3 "$tmp/a/summary.csv" | cmp - "$tmp/i/summary.csv" || fail "after the reruns the summary differs"
echo "classify: reruns recompute exactly the slides whose inputs or settings changed (seed, chains, heatmap, sampler, steps, eta, size, preset, grid, slide, model, damaged or missing outputs, --force); merge refuses another model's results"

# ---- no output may overwrite an input (links count) ----
mkdir -p "$tmp/L/slide1" "$tmp/H/slide1"
ln -s "$tmp/slide1.svs" "$tmp/L/slide1/result.json"
ln "$tmp/slide1.svs" "$tmp/H/slide1/heatmap.png"
sum1=$(sha256sum <"$tmp/slide1.svs")
expect 1 "the output is the same file as the input" "$mexd" classify "$tmp/slide1.svs" --backbone "$bb" --model "$model" --out "$tmp/L" $opts
expect 1 "the output is the same file as the input" "$mexd" classify "$tmp/slide1.svs" --backbone "$bb" --model "$model" --out "$tmp/H" $opts
ln -s "$model" "$tmp/H/summary.csv"
expect 1 "summary.csv: the output is the same file as the input" "$mexd" classify "$tmp/slide2.svs" --backbone "$bb" --model "$model" --out "$tmp/H" $opts
[ "$(sha256sum <"$tmp/slide1.svs")" = "$sum1" ] || fail "slide1 changed"
echo "classify: outputs that are inputs (symbolic and hard links) refused, inputs untouched"

# ---- names: commas, quotes, line breaks and ';' survive (RFC 4180, locations list) ----
mkdir "$tmp/n"
cp "$tmp/slide1.svs" "$tmp/n/a,b.svs"
cp "$tmp/slide2.svs" "$tmp/n/q\"uote.svs"
cp "$tmp/slide3.svs" "$tmp/n/semi;colon.svs"
nl=$(printf 'new\nline.svs')
cp "$tmp/slide1.svs" "$tmp/n/$nl"
"$mexd" classify "$tmp/n/a,b.svs" "$tmp/n/q\"uote.svs" "$tmp/n/semi;colon.svs" "$tmp/n/$nl" \
  --backbone "$bb" --model "$model" --out "$tmp/nout" $opts --quiet || fail "odd names"
/usr/bin/python3 - "$tmp" <<'PY' || fail "odd names: summary"
import csv, sys
tmp = sys.argv[1]
rows = list(csv.DictReader(open(f"{tmp}/nout/summary.csv", newline="")))
ids = [r["slide_id"] for r in rows]
assert ids == ["a,b", 'q"uote', "semi;colon", "new\nline"], ids
assert [r["path"] for r in rows] == [f"{tmp}/n/{i}.svs" for i in ids]
# the same slides through a manifest (quoted fields), merged: the same summary
with open(f"{tmp}/nm.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path"])
    for i in ids:
        w.writerow([f"{tmp}/n/{i}.svs"])
PY
"$mexd" classify --merge --manifest "$tmp/nm.csv" --out "$tmp/nout" --model "$model" ||
  fail "merge of the odd names"
echo "classify: slide names with ',', '\"', ';' and a line break: classified, summary and manifest round trip"

echo "classify-check: all outputs, resume, shards, errors, identity, links, names"
