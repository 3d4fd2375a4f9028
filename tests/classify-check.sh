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
expect 1 "none.csv" "$mexd" classify --manifest "$tmp/none.csv" --backbone "$bb" --model "$model"
echo "classify-check: all outputs, resume, shards, errors"
