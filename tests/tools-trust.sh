#!/bin/sh
# tools-trust.sh MEXD: issue 16 ("trustworthy outputs") for extract, eval, train, synth-bags, the
# benchmarks, demo and the grid options of tiles:
#   - an output that is an input (the same path, a symbolic link, a hard link) is refused with
#     exit 1 and a message naming it, and the input is byte-identical afterwards (sha256);
#   - an input that is a FIFO is refused (exit 1) without hanging;
#   - a slide whose features are NaN, or so large that the model's numbers overflow, is an error
#     naming the slide (eval, train; extract names the tile), and --skip-bad skips it with a
#     warning naming it;
#   - every numeric option out of its range is a usage error (exit 2) naming the option;
#   - slide ids with commas, quotes and line breaks survive the labels CSV and the predictions
#     CSV (RFC 4180, lib/io/csv.h);
#   - a killed training run's log loses no line and keeps no cut one; temporaries a killed run
#     left are removed by the next.
# Everything runs on the cpu backend on a tiny synthetic cohort: a few seconds.
set -u
mexd=${1:?usage: tools-trust.sh MEXD}
mexd=$(cd "$(dirname "$mexd")" && pwd)/$(basename "$mexd") # the test runs in a temporary folder
fx=$(cd "$(dirname "$0")" && pwd)/fixtures
py=/usr/bin/python3
$py -c "import h5py, numpy" 2>/dev/null || { echo "python3-h5py / numpy missing: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
fails=0
passes=0
ok() { passes=$((passes + 1)); echo "ok: $*"; }
bad() { fails=$((fails + 1)); echo "FAIL: $*"; }
sum() { sha256sum "$1" | cut -d' ' -f1; }

# expect CODE PATTERN CMD...: exit CODE within 20 s, stderr matching PATTERN (grep -E)
expect() {
  want=$1 pat=$2
  shift 2
  timeout 20 "$mexd" "$@" >out.txt 2>err.txt
  got=$?
  if [ "$got" -ne "$want" ]; then
    bad "mexd $* exited $got, expected $want: $(cat err.txt)"
  elif [ -n "$pat" ] && ! grep -qE -- "$pat" err.txt; then
    bad "mexd $*: stderr lacks /$pat/: $(cat err.txt)"
  elif grep -q "GLib\|CRITICAL\|WARNING \*\*" err.txt; then
    bad "mexd $*: a GLib message reached the user: $(cat err.txt)"
  else
    ok "mexd $* -> $got: $(head -c 300 err.txt)"
  fi
}
# same FILE SUM: FILE still has the SHA-256 SUM
same() {
  if [ "$(sum "$1")" = "$2" ]; then ok "$1 unchanged"; else bad "$1 was changed"; fi
}
# usage CMD... -- OPTION: exit 2 naming OPTION
usage() {
  opt=$1
  shift
  expect 2 "(^| )$opt .*(outside|must|multiple|takes)" "$@"
}

# ---- a tiny cohort and models ----
"$mexd" synth-bags --out d2 --classes 2 --slides 16 --dim 8 --min-instances 20 \
  --max-instances 40 --min-fraction 0.05 --max-fraction 0.2 --seed 3 --quiet || exit 1
tiny="--width 16 --heads 2 --landmarks 8 --pinv-iterations 3 --res-conv-taps 3"
"$mexd" train abmil --data d2 --labels d2/labels.csv --out ab --abmil-width 16 --abmil-attn 8 \
  --epochs 1 --seed 5 --device cpu --quiet || exit 1
"$mexd" train adapter --data d2 --labels d2/labels.csv --out a $tiny --epochs 1 --seed 5 \
  --device cpu --quiet || exit 1
data="--data d2 --labels d2/labels.csv"
lab=$(sum d2/labels.csv)
f0=$(sum d2/h5_files/slide_000.h5)
mab=$(sum ab/model.safetensors)
ma=$(sum a/model.safetensors)

# ---- eval: --out is never an input ----
expect 1 "d2/labels.csv.*one of the inputs" eval --model ab/model.safetensors $data --device cpu \
  --out d2/labels.csv
same d2/labels.csv "$lab"
ln -s ../ab/model.safetensors d2/model-link.csv
expect 1 "model-link.csv.*same file as the input ab/model.safetensors" \
  eval --model ab/model.safetensors $data --device cpu --out d2/model-link.csv
same ab/model.safetensors "$mab"
ln d2/h5_files/slide_000.h5 hard.csv
expect 1 "slide_000.*hard.csv.*same file as the input d2/h5_files/slide_000.h5" \
  eval --model ab/model.safetensors $data --device cpu --out hard.csv --split all
same d2/h5_files/slide_000.h5 "$f0"
expect 1 "existing folder" eval --model ab/model.safetensors $data --device cpu --out d2
# stale temporaries of a killed run beside the output are removed
touch .preds.csv.mexd-999999-AbCdEf
expect 0 "" eval --model ab/model.safetensors $data --device cpu --out preds.csv --quiet
if [ -e .preds.csv.mexd-999999-AbCdEf ]; then bad "eval left a stale temporary"; else ok "stale temporary removed"; fi

# ---- eval: FIFOs ----
mkfifo fifo.csv fifo.safetensors
expect 1 "fifo.csv.*FIFO" eval --model ab/model.safetensors --data d2 --labels fifo.csv --device cpu
expect 1 "fifo.safetensors.*FIFO" eval --model fifo.safetensors $data --device cpu
cp -r d2 dfifo
rm dfifo/h5_files/slide_002.h5
mkfifo dfifo/h5_files/slide_002.h5
expect 1 "slide_002.*FIFO" eval --model ab/model.safetensors --data dfifo \
  --labels dfifo/labels.csv --device cpu
expect 0 "skipped slide slide_002" eval --model ab/model.safetensors --data dfifo \
  --labels dfifo/labels.csv --device cpu --skip-bad

# ---- eval, train: numbers that are not finite ----
cp -r d2 dnan
cp -r d2 dbig
$py - <<'PY'
import h5py
with h5py.File("dnan/h5_files/slide_002.h5", "r+") as f:
    f["features"][1, 3] = float("nan")
# finite features the model's float32 overflows on: NaN probabilities
with h5py.File("dbig/h5_files/slide_002.h5", "r+") as f:
    f["features"][2, :] = 3e38
PY
for m in ab a; do
  expect 1 "slide 'slide_002'.*NaN" eval --model $m/model.safetensors --data dnan \
    --labels dnan/labels.csv --device cpu
  expect 0 "skipped slide slide_002" eval --model $m/model.safetensors --data dnan \
    --labels dnan/labels.csv --device cpu --skip-bad
  expect 1 "slide 'slide_002'.*(NaN|not finite|infinite)" eval --model $m/model.safetensors \
    --data dbig --labels dbig/labels.csv --device cpu
  if grep -q "slide 0," err.txt; then bad "eval named the slide by its index"; fi
  expect 0 "skipped slide slide_002" eval --model $m/model.safetensors --data dbig \
    --labels dbig/labels.csv --device cpu --skip-bad --out big.csv
  if grep -q slide_002 big.csv; then bad "a skipped slide has a prediction"; else ok "skipped slide left out of the predictions"; fi
done
# slide_002 is a test slide; in training the overflow reaches the loss of a training slide
train_big=$(awk -F, '$3 == "train" {print $1; exit}' d2/labels.csv)
cp -r d2 dbig2
$py - "$train_big" <<'PY'
import h5py, sys
with h5py.File(f"dbig2/h5_files/{sys.argv[1]}.h5", "r+") as f:
    f["features"][2, :] = 3e38
PY
expect 1 "slide '$train_big'.*not finite|slide '$train_big'.*NaN" train abmil --data dbig2 \
  --labels dbig2/labels.csv --out tb --abmil-width 16 --abmil-attn 8 --epochs 2 --seed 5 \
  --device cpu --quiet
expect 0 "skipped slide $train_big" train abmil --data dbig2 --labels dbig2/labels.csv \
  --out tb2 --abmil-width 16 --abmil-attn 8 --epochs 2 --seed 5 --device cpu --quiet --skip-bad
expect 1 "slide 'slide_002'.*NaN" train abmil --data dnan --labels dnan/labels.csv --out tn \
  --abmil-width 16 --abmil-attn 8 --epochs 1 --device cpu --quiet

# ---- train: outputs are never inputs ----
mkdir -p run
cp d2/labels.csv run/log.jsonl
lj=$(sum run/log.jsonl)
expect 1 "run/log.jsonl.*one of the inputs" train abmil --data d2 --labels run/log.jsonl \
  --out run --epochs 1 --device cpu --quiet
same run/log.jsonl "$lj"
cp a/model.safetensors run/model.safetensors
rm run/log.jsonl
expect 1 "run/model.safetensors.*one of the inputs" train moe $data --out run $tiny \
  --adapter run/model.safetensors --epochs 1 --device cpu --quiet
same run/model.safetensors "$ma"
mkdir -p run2
ln -s ../a/model.safetensors run2/model.safetensors
expect 1 "run2/model.safetensors.*same file as the input a/model.safetensors" train moe $data \
  --out run2 $tiny --adapter a/model.safetensors --epochs 1 --device cpu --quiet
same a/model.safetensors "$ma"
mkdir -p run3
ln d2/h5_files/slide_001.h5 run3/checkpoint.safetensors
f1=$(sum d2/h5_files/slide_001.h5)
expect 1 "checkpoint.safetensors.*same file as the input d2/h5_files/slide_001.h5" \
  train abmil $data --out run3 --epochs 1 --device cpu --quiet
same d2/h5_files/slide_001.h5 "$f1"
expect 1 "fifo.csv.*FIFO" train abmil --data d2 --labels fifo.csv --out run4 --device cpu
expect 1 "fifo.safetensors.*FIFO" train moe $data --adapter fifo.safetensors --out run4 --device cpu

# ---- train: a kill loses no log line and keeps no cut one ----
"$mexd" train abmil $data --out k1 --abmil-width 16 --abmil-attn 8 --epochs 3 --seed 5 \
  --device cpu --quiet
MEXD_TRAIN_KILL_AT=2:3 "$mexd" train abmil $data --out k2 --abmil-width 16 --abmil-attn 8 \
  --epochs 3 --seed 5 --device cpu --quiet 2>/dev/null
printf '{"epoch": 2, "steps": 1' >>k2/log.jsonl # as if the kill had cut a line short
touch k2/.model.safetensors.mexd-999999-AbCdEf
"$mexd" train abmil $data --out k2 --abmil-width 16 --abmil-attn 8 --epochs 3 --seed 5 \
  --device cpu --quiet --resume
if $py - k1/log.jsonl k2/log.jsonl <<'PY'; then ok "resumed log = uninterrupted log"; else bad "resumed log differs"; fi
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
for x in a + b:
    x.pop("seconds")
sys.exit(0 if a == b and len(a) == 3 else 1)
PY
if ls -a k2 | grep -q "mexd-"; then bad "a stale temporary is left in k2: $(ls -a k2)"; else ok "no temporary left in the run folder"; fi
cmp -s k1/model.safetensors k2/model.safetensors && ok "resumed model identical" ||
  bad "resumed model differs"

# ---- labels and predictions CSV: ids with commas, quotes and line breaks ----
mkdir -p dq/h5_files
$py - <<'PY'
import csv, shutil
ids = ['a,b', 'q"uote', 'multi\nline', ' lead', 'plain', '#hash', 'c,"d"', 'e']
rows = list(csv.DictReader(open("d2/labels.csv")))
with open("dq/labels.csv", "w", newline="") as f:
    # every field quoted: a quoted field is kept byte for byte (the leading space too)
    w = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL)
    w.writerow(["slide_id", "label", "split"])
    for i, r in enumerate(rows[: len(ids)]):
        shutil.copy(f"d2/h5_files/{r['slide_id']}.h5", f"dq/h5_files/{ids[i]}.h5")
        w.writerow([ids[i], r["label"], "train" if i % 4 else "test"])
PY
expect 0 "" eval --model ab/model.safetensors --data dq --labels dq/labels.csv --device cpu \
  --split all --out dq.csv
if $py - <<'PY'; then ok "slide ids survive the labels and predictions CSV"; else bad "ids differ"; fi
import csv, sys
want = [r["slide_id"] for r in csv.DictReader(open("dq/labels.csv", newline=""))]
got = list(csv.DictReader(open("dq.csv", newline="")))
ids = [r["slide_id"] for r in got]
ok = ids == want and all(abs(float(r["p_normal"]) + float(r["p_tumor"]) - 1) < 1e-6 for r in got)
print(ids)
sys.exit(0 if ok else 1)
PY

# ---- extract ----
cp -r "$fx/backbones/tiles" tiles
cp "$fx/backbones/resnet-tiny.safetensors" bb.safetensors
bb=$(sum bb.safetensors)
t0=$(sum tiles/t0_0_0.png)
expect 1 "bb.safetensors.*one of the inputs" extract --backbone bb.safetensors --tiles tiles \
  --out bb.safetensors --device cpu
same bb.safetensors "$bb"
ln -s tiles/t0_0_0.png tile-link.h5
expect 1 "tile-link.h5.*same file as the input tiles/t0_0_0.png" extract \
  --backbone bb.safetensors --tiles tiles --out tile-link.h5 --device cpu
same tiles/t0_0_0.png "$t0"
ln bb.safetensors bb-hard.h5
expect 1 "bb-hard.h5.*same file as the input bb.safetensors" extract --backbone bb.safetensors \
  --tiles tiles --out bb-hard.h5 --device cpu
same bb.safetensors "$bb"
cp tiles/t1_72_0.png slide.svs
sl=$(sum slide.svs)
ln -s slide.svs slide-link.h5
expect 1 "slide-link.h5.*same file as the input slide.svs" extract --backbone bb.safetensors \
  --slide slide.svs --out slide-link.h5 --device cpu
same slide.svs "$sl"
expect 1 "fifo.safetensors.*FIFO" extract --backbone fifo.safetensors --tiles tiles --out x.h5
mkfifo fifo.svs
expect 1 "fifo.svs.*FIFO" extract --backbone bb.safetensors --slide fifo.svs --out x.h5
cp -r tiles tfifo
mkfifo tfifo/t9_0_0.png
expect 1 "tfifo/t9_0_0.png.*FIFO" extract --backbone bb.safetensors --tiles tfifo --out x.h5
# a backbone whose numbers overflow float32: no features, an error naming the tile
$py - <<'PY'
import json, struct
import numpy as np
b = open("bb.safetensors", "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
data = bytearray(b[8 + n:])
for name in ("conv1.weight", "layer1.0.conv1.weight"):  # 1e60: past float32
    s, e = h[name]["data_offsets"]
    w = np.frombuffer(bytes(data[s:e]), "<f4") * np.float32(1e30)
    data[s:e] = w.astype("<f4").tobytes()
open("huge.safetensors", "wb").write(b[:8 + n] + bytes(data))
PY
expect 1 "tiles/t0_0_0.png: the backbone's features are not finite" extract \
  --backbone huge.safetensors --tiles tiles --out nan.h5 --device cpu
if [ -e nan.h5 ]; then bad "extract wrote features that are not finite"; else ok "no output for features that are not finite"; fi
expect 0 "" extract --backbone bb.safetensors --tiles tiles --out good.h5 --device cpu -q
# from a slide (tests/data/make-slide.sh; needs vips and tiffset): the slide and the tile named
if command -v vips >/dev/null 2>&1 && command -v tiffset >/dev/null 2>&1 &&
  sh "$(dirname "$fx")/data/make-slide.sh" ws --seed 5 --width 1024 --height 768 \
    --flavour aperio >/dev/null 2>&1; then
  expect 1 "ws/synth.svs: the tile at level-0 \([0-9]+, [0-9]+\) \(tile 1 of [0-9]+\): the backbone's features are not finite" \
    extract --backbone huge.safetensors --slide ws/synth.svs --preset bwh_biopsy --device cpu \
    --out ws/nan.h5 -q
  if [ -e ws/nan.h5 ]; then bad "extract --slide wrote features that are not finite"; else ok "no output for the slide"; fi
  ws=$(sum ws/synth.svs)
  ln ws/synth.svs ws/hard.h5
  expect 1 "ws/hard.h5.*same file as the input ws/synth.svs" extract --backbone bb.safetensors \
    --slide ws/synth.svs --preset bwh_biopsy --device cpu --out ws/hard.h5
  same ws/synth.svs "$ws"
  expect 2 "no level 9" tiles ws/synth.svs --level 9
  expect 0 "" extract --backbone bb.safetensors --slide ws/synth.svs --preset bwh_biopsy \
    --device cpu --out ws/good.h5 -q --overlap 64 --sthresh 10 --mthresh 5
else
  echo "no vips/tiffset: extract --slide not tried"
fi

# ---- synth-bags: writes never go through links ----
mkdir -p sb/h5_files
echo precious >precious.csv
echo precious-h5 >precious.h5
pc=$(sum precious.csv)
ph=$(sum precious.h5)
ln -s ../precious.csv sb/labels.csv
ln precious.h5 sb/h5_files/slide_000.h5
echo '{}' >sb/synth.json # an earlier synth-bags output: --force may replace it
expect 0 "" synth-bags --out sb --force --classes 2 --slides 4 --dim 4 --min-instances 5 \
  --max-instances 9 --quiet
same precious.csv "$pc"
same precious.h5 "$ph"
if [ -L sb/labels.csv ]; then bad "sb/labels.csv is still a link"; else ok "sb/labels.csv replaced, not written through"; fi

# ---- numeric options out of range: exit 2 naming the option ----
usage --lr train abmil $data --out z --lr nan
usage --lr train abmil $data --out z --lr -1
usage --lr train abmil $data --out z --lr 0
usage --lr train abmil $data --out z --lr 2
usage --epochs train abmil $data --out z --epochs 0
usage --patience train abmil $data --out z --patience -1
usage --val-fraction train abmil $data --out z --val-fraction 1.5
usage --seed train abmil $data --out z --seed -1
usage --dropout train adapter $data --out z --dropout 1
usage --experts train moe $data --out z --adapter a/model.safetensors --experts 1
usage --alpha train moe $data --out z --adapter a/model.safetensors --alpha 0,0.5
usage --expert-of-class train moe $data --out z --adapter a/model.safetensors --experts 2 \
  --expert-of-class 0,2
usage --val-steps train diffusion $data --out z --moe a/model.safetensors --val-steps 1
usage --val-chains train diffusion $data --out z --moe a/model.safetensors --val-chains 0
usage --width train adapter $data --out z --width 10 --heads 4
usage --res-conv-taps train adapter $data --out z --res-conv-taps 4
usage --heads train adapter $data --out z --heads 0
usage --landmarks train adapter $data --out z --landmarks 0
usage --pinv-iterations train adapter $data --out z --pinv-iterations 101
usage --abmil-width train abmil $data --out z --abmil-width 0
usage --steps eval --model ab/model.safetensors $data --steps 1
usage --chains eval --model ab/model.safetensors $data --chains 0
usage --sample-seed eval --model ab/model.safetensors $data --sample-seed -1
usage --val-fraction eval --model ab/model.safetensors $data --val-fraction nan
usage --batch extract --backbone bb.safetensors --tiles tiles --out x.h5 --batch 0
usage --threads extract --backbone bb.safetensors --slide slide.svs --out x.h5 --threads -1
usage --mag extract --backbone bb.safetensors --slide slide.svs --out x.h5 --mag 0
usage --mpp extract --backbone bb.safetensors --slide slide.svs --out x.h5 --mpp nan
usage --level extract --backbone bb.safetensors --slide slide.svs --out x.h5 --level -1
usage --size extract --backbone bb.safetensors --slide slide.svs --out x.h5 --size 0
usage --overlap extract --backbone bb.safetensors --slide slide.svs --out x.h5 --overlap 256
usage --sthresh tiles slide.svs --sthresh 256
usage --mthresh tiles slide.svs --mthresh 4
usage --close tiles slide.svs --close -1
usage --a-t tiles slide.svs --a-t -1
usage --max-holes tiles slide.svs --max-holes -1
usage --seg-level tiles slide.svs --seg-level 65
usage --step bench read slide.svs --step 0
usage --classes synth-bags --out z --classes 4
usage --slides synth-bags --out z --slides 1
usage --dim synth-bags --out z --dim 1
usage --test-fraction synth-bags --out z --test-fraction 1
usage --min-fraction synth-bags --out z --min-fraction 0
usage --max-instances synth-bags --out z --min-instances 10 --max-instances 5
usage --seed synth-bags --out z --seed -1
usage --reps bench gemm 4 4 4 --reps 0
usage M bench gemm 0 4 4
usage --chains bench mexd --chains 0
usage --steps bench mexd --steps 1
usage --warmup bench mexd --warmup -1
usage --n bench train --n 0
usage --seed bench train --seed -1
usage --tile bench backbone --backbone bb.safetensors --tile 1
usage --seed demo --seed -1
usage --test-slides demo --test-slides 1
expect 2 "--classes takes 2 to" train abmil $data --out z --classes a,,b
expect 2 "--preset: .*camelyon16" train abmil $data --out z --preset camelyon17
expect 2 "--preset: .*camelyon16" eval --model ab/model.safetensors $data --preset camelyon17
expect 2 "--tiles takes the PNG" extract --backbone bb.safetensors --tiles tiles --out x.h5 --mag 20
expect 2 "one of --mag, --mpp and --level" tiles slide.svs --mag 20 --level 0
expect 2 "--level takes an integer" tiles slide.svs --level x

echo "tools-trust: $passes passed, $fails failed"
exit $((fails > 0))
