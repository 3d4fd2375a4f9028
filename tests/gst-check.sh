#!/bin/sh
# gst-check.sh SRCDIR TEST_GST MEXD_EXE: the GstHarness tests (tests/test-gst.c) with a generated
# slide, then the extract-features pipeline against `mexd extract --slide` (identical features).
# Without vips/tiffset the slide tests skip inside test-gst.
set -eu
src=$1
test_gst=$2
mexd=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# a fresh registry each run: a failed scan is remembered in it (blacklisted plugin)
export GST_REGISTRY="$tmp/registry.bin"
if command -v vips >/dev/null 2>&1 && command -v tiffset >/dev/null 2>&1; then
  sh "$src/tests/data/make-slide.sh" "$tmp/s" --seed 7 --width 4096 --height 3072 \
    --flavour aperio >/dev/null
  export MEXD_TEST_SLIDE="$tmp/s/synth.svs"
fi
# under AddressSanitizer: full stacks for allocations, so that .ci/lsan.supp can recognise
# GLib's intentional leak of its first quark table (see there)
ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0" "$test_gst"
# the documentation: gst-inspect-1.0 lists every element of the plugin with its pad templates, and
# each element's source opens with a SECTION doc holding an example gst-launch-1.0 line
# (test-gst's /gst/registry checks that every property has a description)
inspect() { "$@"; }
if ldd "${GST_PLUGIN_PATH:-}/libgstmexd.so" 2>/dev/null | grep -q libasan; then
  inspect() { LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0 "$@"; }
fi
inspect gst-inspect-1.0 mexd >"$tmp/inspect.txt"
for e in openslidesrc mexdembed mexdmoe mexddiffc mexdfeaturesink mexdfeaturesrc mexdheatmap; do
  grep -q "^ *$e: " "$tmp/inspect.txt" || { echo "gst-inspect-1.0 mexd does not list $e"; exit 1; }
  inspect gst-inspect-1.0 "$e" >"$tmp/inspect-$e.txt"
  grep -q "Pad Templates:" "$tmp/inspect-$e.txt" || { echo "$e: no pad templates"; exit 1; }
  f="$src/plugins/gst$e.c"
  [ "$e" = openslidesrc ] && f="$src/plugins/gstopenslidesrc.c"
  sed -n '1,40p' "$f" | grep -q "SECTION:element-$e" || { echo "$f: no SECTION doc"; exit 1; }
  sed -n '1,60p' "$f" | grep -q "gst-launch-1.0" || { echo "$f: no example pipeline"; exit 1; }
done
echo "gst-inspect-1.0 mexd: $(grep -c '^ *[a-z]*: ' "$tmp/inspect.txt") elements, each documented"
# A sanitizer build of the plugin needs the ASan runtime preloaded into gst-launch-1.0
# (uninstrumented; its leak report would be GStreamer's own, so leaks are not checked there)
run_gst() { "$@"; }
if ldd "${GST_PLUGIN_PATH:-}/libgstmexd.so" 2>/dev/null | grep -q libasan; then
  asan=$(gcc -print-file-name=libasan.so)
  run_gst() { LD_PRELOAD="$asan" ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" "$@"; }
fi
# bad input through gst-launch-1.0 (issue 16): each run ends within 30 s with a non-zero exit,
# the message naming what is wrong, and no GLib/GStreamer warning or critical.  Only errors the
# elements find at start (or the parser at linking): gst-launch-1.0 1.22 can miss an error
# posted in the streaming thread before its main loop runs and then wait forever, whatever the
# element (test-gst checks those in-process)
model="$src/tests/fixtures/mexd/model-e2.safetensors"
vit="$src/tests/fixtures/gst/vit-d32.safetensors"
bag="$src/tests/fixtures/mexd/bag-n7.npy"
refused() { # needle gst-launch arguments…
  needle=$1
  shift
  set +e
  run_gst timeout 30 gst-launch-1.0 "$@" >"$tmp/bad.txt" 2>&1
  rc=$?
  set -e
  # (gst-launch-1.0 exits 1 on an error, 255 when the pipeline does not start; 129..254 is a
  # signal)
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || { [ "$rc" -gt 128 ] && [ "$rc" -lt 255 ]; }; then
    echo "gst-launch-1.0 $*: exit $rc (0: not refused, 124: a hang, 129..254: a crash)"
    cat "$tmp/bad.txt"
    exit 1
  fi
  grep -q -- "$needle" "$tmp/bad.txt" || { echo "gst-launch-1.0 $*: no \"$needle\" in:"; cat "$tmp/bad.txt"; exit 1; }
  if grep -E "GLib-|GStreamer-(WARNING|CRITICAL)|CRITICAL \*\*|AddressSanitizer|runtime error" "$tmp/bad.txt"; then
    echo "gst-launch-1.0 $*: a warning or critical"
    exit 1
  fi
}
# a missing slide fails fast, naming it, every time (it used to hang ~40 % of the runs)
t0=$(date +%s)
for k in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  refused missing.svs openslidesrc location="$tmp/missing.svs" ! mexdembed model="$vit" ! fakesink
done
echo "openslidesrc location=missing.svs ! mexdembed: 20 of 20 runs failed naming the slide ($(($(date +%s) - t0)) s)"
mkfifo "$tmp/fifo.h5"
refused fifo.h5 mexdfeaturesrc location="$bag;$tmp/fifo.h5" ! mexdmoe model="$model" device=cpu ! fakesink
refused tile-size openslidesrc location="$tmp/missing.svs" tile-size=0 ! fakesink
refused overlap openslidesrc location="$tmp/missing.svs" tile-size=64 overlap=64 ! fakesink
refused contour-fn openslidesrc location="$tmp/missing.svs" contour-fn=five_pt ! fakesink
refused sampler mexdfeaturesrc location="$bag" ! mexdmoe model="$model" device=cpu ! mexddiffc model="$model" device=cpu sampler=euler ! fakesink
refused chains mexdfeaturesrc location="$bag" ! mexdmoe model="$model" device=cpu ! mexddiffc model="$model" device=cpu chains=0 ! fakesink
refused mexddiffc mexdfeaturesrc location="$bag" ! mexddiffc model="$model" device=cpu ! fakesink
echo "gst-launch-1.0: bad input and misuse refused with a message, no warning"
[ -n "${MEXD_TEST_SLIDE:-}" ] || exit 0
# the pipeline of pipelines/extract-features.sh against the command
bb="$src/tests/fixtures/backbones/resnet-tiny.safetensors"
mkdir "$tmp/out"
run_gst sh "$src/pipelines/extract-features.sh" "$MEXD_TEST_SLIDE" "$bb" "$tmp/out" preset=tcga device=cpu
"$mexd" extract --backbone "$bb" --slide "$MEXD_TEST_SLIDE" --preset tcga --device cpu \
  --out "$tmp/ref.h5" -q
/usr/bin/python3 - "$tmp/out/synth.h5" "$tmp/ref.h5" <<'PY' || exit 1
import sys
try:
    import h5py
except ImportError:
    print("no h5py: features not compared"); sys.exit(0)
a, b = h5py.File(sys.argv[1]), h5py.File(sys.argv[2])
assert a["features"].shape == b["features"].shape, (a["features"].shape, b["features"].shape)
assert (a["features"][:] == b["features"][:]).all(), "features differ"
assert (a["coords"][:] == b["coords"][:]).all(), "coords differ"
print(f"extract-features pipeline: {a['features'].shape[0]} tiles, identical to mexd extract --slide")
PY

# classify-features and classify-slide: each slide's mexd-result equals `mexd forward` on the
# same features with the same seed (probabilities to float32 print precision)
compare() { # gst-launch output, then pairs of "slide-id json-file"
  /usr/bin/python3 - "$@" <<'PY'
import json, re, sys
out = open(sys.argv[1]).read()
results = re.findall(r"mexd-result, slide-id=\(string\)([^,]+),.*?probabilities=\(double\)< ([^>]*) >", out)
want = sys.argv[2:]
assert len(results) == len(want) // 2, f"{len(results)} mexd-result messages, expected {len(want) // 2}"
for (sid, probs), (wid, path) in zip(results, zip(want[::2], want[1::2])):
    p = [float(v) for v in probs.split(",")]
    ref = json.load(open(path))["probabilities"]
    sid = sid.strip("\"")
    assert sid == wid, (sid, wid)
    err = max(abs(a - b) for a, b in zip(p, ref))
    assert err < 1e-6, f"{sid}: pipeline {p} vs mexd forward {ref}"
    print(f"  {sid}: probabilities {p} = mexd forward's (max diff {err:.1e})")
PY
}
f1="$src/tests/fixtures/mexd/bag-n7.npy"
"$mexd" forward --model "$model" --features "$f1" --device cpu --seed 5 --json >"$tmp/r1.json"
run_gst sh "$src/pipelines/classify-features.sh" "$f1" "$model" device=cpu seed=5 >"$tmp/cf.txt"
echo "classify-features:"
compare "$tmp/cf.txt" bag-n7 "$tmp/r1.json"
# classify-slide, three slides in a row in one pipeline: one result each, equal to extract + forward
"$mexd" extract --backbone "$vit" --slide "$MEXD_TEST_SLIDE" --preset tcga --device cpu \
  --out "$tmp/vf.h5" -q
"$mexd" forward --model "$model" --features "$tmp/vf.h5" --device cpu --seed 9 --json >"$tmp/r2.json"
three="$MEXD_TEST_SLIDE;$MEXD_TEST_SLIDE;$MEXD_TEST_SLIDE"
run_gst sh "$src/pipelines/classify-slide.sh" "$three" "$vit" "$model" preset=tcga device=cpu \
  seed=9 >"$tmp/cs.txt"
echo "classify-slide (three slides in a row):"
compare "$tmp/cs.txt" synth "$tmp/r2.json" synth "$tmp/r2.json" synth "$tmp/r2.json"

# composition with stock elements: PNG tiles from multifilesrc ! pngdec ! videoconvert (no tile
# meta, no slide events: EOS ends the one slide), equal to extract --tiles + forward
mkdir "$tmp/png" "$tmp/png2"
i=0
for f in "$src"/tests/fixtures/backbones/tiles/*.png; do
  cp "$f" "$tmp/png/$(printf %05d $i).png"
  cp "$f" "$tmp/png2/t${i}_${i}_0.png"
  i=$((i + 1))
done
"$mexd" extract --backbone "$vit" --tiles "$tmp/png2" --device cpu --out "$tmp/pf.h5" -q
"$mexd" forward --model "$model" --features "$tmp/pf.h5" --device cpu --seed 3 --json >"$tmp/r3.json"
run_gst gst-launch-1.0 -m multifilesrc location="$tmp/png/%05d.png" index=0 stop-index=$((i - 1)) \
  caps=image/png,framerate=1/1 ! pngdec ! videoconvert ! video/x-raw,format=RGB \
  ! mexdembed model="$vit" device=cpu ! mexdmoe model="$model" device=cpu \
  ! mexddiffc model="$model" device=cpu seed=3 ! fakesink >"$tmp/mf.txt"
echo "multifilesrc ! pngdec ! videoconvert ! mexdembed ! mexdmoe ! mexddiffc:"
compare "$tmp/mf.txt" "" "$tmp/r3.json"

# heatmap: the routing overlay of each slide (two in a row), the slide's aspect, opaque only on
# tiles (alpha 0.4), every tile drawn; the classification beside it unchanged
"$mexd" tiles "$MEXD_TEST_SLIDE" --preset tcga --out "$tmp/tiles.h5" -q
run_gst sh "$src/pipelines/heatmap.sh" "$MEXD_TEST_SLIDE;$MEXD_TEST_SLIDE" "$vit" "$model" \
  "$tmp/hm" preset=tcga device=cpu seed=9 width=512 >"$tmp/hm.txt"
echo "heatmap:"
compare "$tmp/hm.txt" synth "$tmp/r2.json" synth "$tmp/r2.json"
/usr/bin/python3 - "$tmp" <<'PY' || exit 1
import sys
try:
    import h5py, numpy as np
    from PIL import Image
except ImportError:
    print("no h5py/PIL: heatmap not checked"); sys.exit(0)
tmp = sys.argv[1]
coords = h5py.File(f"{tmp}/tiles.h5")["coords"][:]
for k in range(2):
    im = np.asarray(Image.open(f"{tmp}/hm/heatmap-{k:02d}.png"))
    assert im.shape == (384, 512, 4), im.shape  # 4096 x 3072 at width 512
    s = 512 / 4096
    covered = np.zeros(im.shape[:2], bool)
    for x, y in coords:
        x0, y0, x1, y1 = int(np.floor(x * s)), int(np.floor(y * s)), int(np.ceil((x + 256) * s)), int(np.ceil((y + 256) * s))
        covered[max(y0, 0):y1, max(x0, 0):x1] = True
        cy, cx = int((y + 128) * s), int((x + 128) * s)
        if cy < 384 and cx < 512:
            assert im[cy, cx, 3] == 102, (x, y, im[cy, cx])
    alpha = im[:, :, 3]
    assert not (alpha[~covered] != 0).any(), "opaque pixels outside the tiles"
    assert set(np.unique(alpha)) <= {0, 102}
    print(f"  heatmap-{k:02d}.png: 512 x 384, {len(coords)} tiles drawn, {(alpha > 0).mean():.1%} opaque, "
          f"{len(np.unique(im[alpha > 0][:, :3], axis=0))} colours")
PY
