#!/bin/sh
# train-check.sh MEXD_EXE: `mexd train` and `mexd eval` end to end on a tiny synthetic cohort.
#   - every stage (adapter, moe, diffusion, abmil; the no-routing and pure-noise ablations) runs,
#     writes model.safetensors / checkpoint.safetensors / log.jsonl, and its model evaluates;
#   - a run killed mid-epoch (SIGKILL, MEXD_TRAIN_KILL_AT) and resumed ends with the same bytes as
#     an uninterrupted run;
#   - mexd eval's metrics equal scikit-learn's on the predictions it writes (when sklearn is
#     there);
#   - bad data and bad usage give one clear line and a non-zero exit.
set -eu
mexd=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dev="--device ${MEXD_TRAIN_DEVICE:-cpu}"
tiny="--width 16 --heads 2 --landmarks 8 --pinv-iterations 3 --res-conv-taps 3"
fail() { echo "train-check: $*" >&2; exit 1; }

"$mexd" synth-bags --out "$tmp/d2" --classes 2 --slides 16 --dim 8 --min-instances 20 \
  --max-instances 70 --min-fraction 0.05 --max-fraction 0.2 --seed 3 --quiet
"$mexd" synth-bags --out "$tmp/d3" --classes 3 --slides 15 --dim 8 --min-instances 20 \
  --max-instances 50 --min-fraction 0.05 --max-fraction 0.2 --seed 4 --quiet
data="--data $tmp/d2 --labels $tmp/d2/labels.csv"

# ---- stage 0, and kill + resume ----
"$mexd" train adapter $data --out "$tmp/a" $tiny --epochs 4 --seed 5 $dev --quiet
for f in model.safetensors checkpoint.safetensors log.jsonl; do
  [ -s "$tmp/a/$f" ] || fail "adapter: no $f"
done
[ "$(wc -l <"$tmp/a/log.jsonl")" -eq 4 ] || fail "adapter: log.jsonl has not 4 lines"
set +e
MEXD_TRAIN_KILL_AT=2:3 "$mexd" train adapter $data --out "$tmp/b" $tiny --epochs 4 --seed 5 \
  $dev --quiet
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "the killed run exited 0"
[ "$(wc -l <"$tmp/b/log.jsonl")" -eq 1 ] || fail "killed in epoch 2: the log should have 1 line"
# without --resume an existing checkpoint is refused
if "$mexd" train adapter $data --out "$tmp/b" $tiny --epochs 4 --seed 5 $dev --quiet 2>"$tmp/e"; then
  fail "a second run over a checkpoint without --resume succeeded"
fi
grep -q -- "--resume" "$tmp/e" || fail "no hint about --resume: $(cat "$tmp/e")"
# resuming with other settings is refused
if "$mexd" train adapter $data --out "$tmp/b" $tiny --epochs 4 --seed 6 $dev --quiet --resume \
  2>"$tmp/e"; then
  fail "resume with another seed succeeded"
fi
grep -q "other settings" "$tmp/e" || fail "resume with another seed: $(cat "$tmp/e")"
"$mexd" train adapter $data --out "$tmp/b" $tiny --epochs 4 --seed 5 $dev --quiet --resume
cmp "$tmp/a/model.safetensors" "$tmp/b/model.safetensors" ||
  fail "resumed run: model.safetensors differs from the uninterrupted run"
/usr/bin/python3 - "$tmp/a/checkpoint.safetensors" "$tmp/b/checkpoint.safetensors" <<'PY' ||
import json, struct, sys
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__")
    rep = json.loads(meta.pop("train.report"))
    rep.pop("seconds")  # the only thing that may differ: the epoch's wall time
    return h, meta, rep, b[8 + n:]
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a == b, "checkpoints differ"
print(f"checkpoints: {len(a[0])} tensors (weights and optimizer state) identical")
PY
  fail "resumed run: checkpoint differs from the uninterrupted run"
/usr/bin/python3 - "$tmp/a/log.jsonl" "$tmp/b/log.jsonl" <<'PY' || fail "logs differ"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
for x in a + b:
    x.pop("seconds")
assert a == b, (a, b)
print(f"kill at epoch 2 bag 3 + --resume: same weights, same {len(a)} log lines")
PY

# ---- the other stages ----
"$mexd" train moe $data --out "$tmp/m" $tiny --adapter "$tmp/a/model.safetensors" --experts 2 \
  --alpha 0.25,0.5 --expert-of-class 0,1 --epochs 2 --seed 5 $dev --quiet
"$mexd" train moe $data --out "$tmp/mn" $tiny --adapter "$tmp/a/model.safetensors" --experts 2 \
  --alpha 0.25,0.5 --expert-of-class 0,1 --epochs 2 --seed 5 $dev --quiet --no-routing
dif="--diffusion-width 16 --val-steps 5 --val-chains 2 --epochs 2 --seed 5 $dev --quiet"
"$mexd" train diffusion $data --out "$tmp/x" --moe "$tmp/m/model.safetensors" $dif
"$mexd" train diffusion $data --out "$tmp/xn" --moe "$tmp/m/model.safetensors" $dif --prior none
"$mexd" train abmil $data --out "$tmp/ab" --abmil-width 16 --abmil-attn 8 --epochs 2 --seed 5 \
  $dev --quiet
"$mexd" train abmil --data "$tmp/d3" --labels "$tmp/d3/labels.csv" --out "$tmp/ab3" \
  --abmil-width 16 --abmil-attn 8 --epochs 2 --seed 5 $dev --quiet

# ---- eval, against scikit-learn ----
ev() { # model data-dir out-csv [extra]
  m=$1 d=$2 o=$3
  shift 3
  "$mexd" eval --model "$m" --data "$d" --labels "$d/labels.csv" --out "$o" --json $dev \
    --chains 4 --sampler ddim --steps 10 "$@" >"$o.json"
}
ev "$tmp/a/model.safetensors" "$tmp/d2" "$tmp/p-a.csv"
ev "$tmp/m/model.safetensors" "$tmp/d2" "$tmp/p-m.csv"
ev "$tmp/x/model.safetensors" "$tmp/d2" "$tmp/p-x.csv"
ev "$tmp/x/model.safetensors" "$tmp/d2" "$tmp/p-xp.csv" --prior-only
ev "$tmp/xn/model.safetensors" "$tmp/d2" "$tmp/p-xn.csv"
ev "$tmp/mn/model.safetensors" "$tmp/d2" "$tmp/p-mn.csv"
ev "$tmp/ab/model.safetensors" "$tmp/d2" "$tmp/p-ab.csv"
ev "$tmp/ab3/model.safetensors" "$tmp/d3" "$tmp/p-ab3.csv"
cmp -s "$tmp/p-m.csv" "$tmp/p-xp.csv" ||
  fail "the diffusion model's --prior-only predictions differ from the Dyn-MoE model's"
/usr/bin/python3 - "$tmp" <<'PY' || fail "metrics differ from scikit-learn"
import csv, json, sys
try:
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
except ImportError:
    print("no scikit-learn: eval's metrics not compared"); sys.exit(0)
tmp = sys.argv[1]
for name in ["a", "m", "x", "xp", "xn", "mn", "ab", "ab3"]:
    rows = list(csv.DictReader(open(f"{tmp}/p-{name}.csv")))
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    y = np.array([classes.index(r["label"]) for r in rows])
    p = np.array([[float(r["p_" + c]) for c in classes] for r in rows])
    pred = p.argmax(1)
    assert all(classes[pred[i]] == rows[i]["predicted"] for i in range(len(rows)))
    m = json.load(open(f"{tmp}/p-{name}.csv.json"))
    acc = accuracy_score(y, pred)
    f1 = f1_score(y, pred, average="macro", labels=range(len(classes)), zero_division=0)
    assert abs(m["accuracy"] - acc) < 1e-12, (name, m["accuracy"], acc)
    assert abs(m["macro_f1"] - f1) < 1e-12, (name, m["macro_f1"], f1)
    if len(set(y)) == len(classes):
        # the CSV holds 8 significant digits: ties it creates are not in the model's numbers
        auc = roc_auc_score(y, p[:, 1]) if len(classes) == 2 else \
            roc_auc_score(y, p / p.sum(1, keepdims=True), multi_class="ovr")
        assert abs(m["auc"] - auc) < 1e-6, (name, m["auc"], auc)
    print(f"  {name}: {len(rows)} test slides, ACC {acc:.3f} AUC {m['auc']} F1 {f1:.3f} = sklearn's")
    # selective classification and calibration (issue 19), recomputed here from the CSV
    conf = p[np.arange(len(y)), pred]
    right = pred == y
    def rc(score):  # risk at coverage k, ties pro rata (metrics.h)
        order = sorted(set(score), reverse=True)
        risks, before, k = [], 0.0, 0
        for s in order:
            g = right[score == s]
            e = float((~g).sum())
            for j in range(1, len(g) + 1):
                risks.append((before + j * e / len(g)) / (k + j))
            before += e
            k += len(g)
        n = len(score)
        return sum(risks) / n, 1 - risks[-(-8 * n // 10) - 1], 1 - risks[-(-9 * n // 10) - 1]
    sel = {s["ranked_by"]: s for s in m["selective"]}
    aurc, a80, a90 = rc(conf)
    assert abs(sel["confidence"]["aurc"] - aurc) < 1e-6, (name, sel["confidence"], aurc)
    assert abs(sel["confidence"]["accuracy_at_80"] - a80) < 1e-9, (name, sel, a80)
    assert abs(sel["confidence"]["accuracy_at_90"] - a90) < 1e-9, (name, sel, a90)
    lo, hi = sel["confidence"]["aurc_interval"]
    assert lo <= aurc + 1e-9 and aurc - 1e-9 <= hi or lo == hi, (name, lo, aurc, hi)
    diffusion = name in ("x", "xn")
    assert ("spread" in sel) == diffusion, (name, list(sel))
    b = np.clip(np.ceil(conf * 15).astype(int) - 1, 0, 14)
    ece = sum(abs(right[b == i].mean() - conf[b == i].mean()) * (b == i).sum()
              for i in range(15) if (b == i).any()) / len(y)
    assert abs(m["calibration"]["ece"] - ece) < 1e-6, (name, m["calibration"]["ece"], ece)
    assert [r["count"] for r in m["calibration"]["reliability"]] == np.bincount(b, minlength=15).tolist()
    print(f"  {name}: AURC {aurc:.4f} ECE {ece:.4f}{' (and by spread)' if diffusion else ''} = recomputed")
PY
# ---- calibration (issue 19): fitted on the train split, used on the test split ----
for k in x ab; do
  "$mexd" eval --model "$tmp/$k/model.safetensors" --data "$tmp/d2" --labels "$tmp/d2/labels.csv" \
    --split train $dev --chains 4 --sampler ddim --steps 10 -q --out "$tmp/cal-$k.csv" \
    --calibrate "$tmp/$k-cal.safetensors"
  ev "$tmp/$k-cal.safetensors" "$tmp/d2" "$tmp/p-${k}c.csv"
  # a calibrated model predicts what the model did
  cmp -s "$tmp/p-$k.csv" "$tmp/p-${k}c.csv" || fail "the calibrated $k model predicts differently"
done
/usr/bin/python3 - "$tmp" <<'PY' || fail "the calibration differs from its recomputation"
import csv, json, math, struct, sys
try:
    import numpy as np
    from scipy.optimize import minimize_scalar
except ImportError:
    print("no scipy: the calibration is not recomputed"); sys.exit(0)
tmp = sys.argv[1]
def load(path):
    rows = list(csv.DictReader(open(path)))
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    y = np.array([classes.index(r["label"]) for r in rows])
    p = np.array([[float(r["p_" + c]) for c in classes] for r in rows])
    sp = np.array([float(r["spread"]) for r in rows]) if "spread" in rows[0] else None
    return y, p, sp
def tempered(p, T):
    l = np.log(np.maximum(p, 1e-12)) / T
    e = np.exp(l - l.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
for k in ("x", "ab"):
    with open(f"{tmp}/{k}-cal.safetensors", "rb") as f:
        hl = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(hl))["__metadata__"]
    cal = json.loads(meta["mexd.calibration"])
    y, p, sp = load(f"{tmp}/cal-{k}.csv")
    nll = lambda u: -np.mean(np.log(tempered(p, math.exp(u))[np.arange(len(y)), y]))
    r = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20)), method="bounded",
                        options={"xatol": 1e-9})
    T = cal["temperature"]
    # the CSV's 8 digits move the optimum a little; a flat NLL has no unique minimiser
    assert abs(math.log(T) - r.x) < 1e-3 or abs(nll(math.log(T)) - r.fun) < 1e-7, (k, T, math.exp(r.x))
    assert cal["slides"] == len(y), (k, cal["slides"], len(y))
    assert (sp is not None) == (k == "x") == ("refer_spread" in cal), (k, list(cal))
    yt, pt, spt = load(f"{tmp}/p-{k}c.csv")
    m = json.load(open(f"{tmp}/p-{k}c.csv.json"))
    q = tempered(pt, T)
    pred = q.argmax(1)
    conf = q[np.arange(len(yt)), pred]
    right = pred == yt
    b = np.clip(np.ceil(conf * 15).astype(int) - 1, 0, 14)
    ece = sum(abs(right[b == i].mean() - conf[b == i].mean()) * (b == i).sum()
              for i in range(15) if (b == i).any()) / len(yt)
    assert abs(m["calibration"]["temperature"] - T) < 1e-12
    assert abs(m["calibration"]["ece_calibrated"] - ece) < 1e-6, (k, m["calibration"], ece)
    if sp is not None:
        n = len(sp)
        s = sorted(sp)[math.ceil(0.9 * n - 1e-9) - 1]
        assert abs(cal["refer_spread"] - s) <= 1e-6 * max(s, 1e-30), (cal["refer_spread"], s)
        assert m["referral"]["referred"] == int((spt > cal["refer_spread"]).sum()), m["referral"]
    print(f"  {k}: T {T:.4f} = scipy's, calibrated ECE {ece:.4f}"
          f"{', referral above %.4g' % cal['refer_spread'] if sp is not None else ''} = recomputed")
PY
# without sampler options a calibrated MExD model runs with the settings its referral threshold
# was fitted with (the spread depends on them); another one given is refused
"$mexd" eval --model "$tmp/x-cal.safetensors" $data --out "$tmp/p-xd.csv" --json $dev \
  >"$tmp/p-xd.csv.json"
cmp -s "$tmp/p-xc.csv" "$tmp/p-xd.csv" || fail "the calibrated model did not use its own sampler settings"
/usr/bin/python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))["sampling"]; \
assert s == {"sampler": "ddim", "chains": 4, "steps": 10, "sample_seed": 0}, s' "$tmp/p-xd.csv.json" ||
  fail "eval --json does not report the calibration's sampler settings"
ev "$tmp/x/model.safetensors" "$tmp/d2" "$tmp/p-x2.csv" --reliability "$tmp/rel.png"
[ "$(head -c 8 "$tmp/rel.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
  fail "--reliability did not write a PNG"
# a calibrated model's diagram: the raw probabilities and the calibrated ones side by side, and
# the calibrated bins in the JSON
ev "$tmp/x-cal.safetensors" "$tmp/d2" "$tmp/p-x3.csv" --reliability "$tmp/rel2.png"
/usr/bin/python3 - "$tmp/rel2.png" "$tmp/p-x3.csv.json" <<'PY' || fail "the calibrated reliability diagram"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", b[16:24]) == (960, 480), b[16:24]
c = json.load(open(sys.argv[2]))["calibration"]
raw, cal = c["reliability"], c["reliability_calibrated"]
assert sum(r["count"] for r in raw) == sum(r["count"] for r in cal) == 4, (raw, cal)
PY

# ---- errors: one line, non-zero exit ----
expect() { # code needle command...
  code=$1 needle=$2
  shift 2
  set +e
  "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  set -e
  [ "$rc" -eq "$code" ] || fail "$*: exit $rc, expected $code ($(cat "$tmp/err"))"
  grep -q -- "$needle" "$tmp/err" || fail "$*: no \"$needle\" in: $(cat "$tmp/err")"
  [ "$(wc -l <"$tmp/err")" -le 2 ] || fail "$*: more than one error line: $(cat "$tmp/err")"
}
expect 2 "stage first" "$mexd" train
expect 2 "unknown training stage" "$mexd" train dance $data --out "$tmp/z"
expect 2 "give --data" "$mexd" train adapter --out "$tmp/z"
expect 2 "needs --adapter" "$mexd" train moe $data --out "$tmp/z"
expect 2 "--alpha" "$mexd" train moe $data --out "$tmp/z" --adapter "$tmp/a/model.safetensors" \
  --alpha 0.2,x
expect 2 "--prior" "$mexd" train diffusion $data --out "$tmp/z" --moe "$tmp/m/model.safetensors" \
  --prior maybe
expect 1 "not found\|No such\|does not exist\|no such" "$mexd" train adapter --data "$tmp/nope" \
  --labels "$tmp/nope.csv" --out "$tmp/z"
expect 1 "training checkpoint" "$mexd" eval --model "$tmp/a/checkpoint.safetensors" $data
expect 1 "not an adapter file" "$mexd" train moe $data --out "$tmp/z" \
  --adapter "$tmp/ab/model.safetensors"
expect 1 "Diff-C already" "$mexd" train diffusion $data --out "$tmp/z" \
  --moe "$tmp/x/model.safetensors"
expect 1 "classes" "$mexd" eval --model "$tmp/ab3/model.safetensors" $data
expect 2 "--split" "$mexd" eval --model "$tmp/a/model.safetensors" $data --split sometimes
expect 2 "same file" "$mexd" eval --model "$tmp/a/model.safetensors" $data --out "$tmp/same" \
  --reliability "$tmp/same"
expect 1 "model" "$mexd" eval --model "$tmp/a/model.safetensors" $data \
  --reliability "$tmp/a/model.safetensors"
expect 1 "model" "$mexd" eval --model "$tmp/a/model.safetensors" $data \
  --calibrate "$tmp/a/model.safetensors"
expect 2 "same file" "$mexd" eval --model "$tmp/a/model.safetensors" $data --out "$tmp/same" \
  --calibrate "$tmp/same"
expect 2 "fitted with --sample-seed 0" "$mexd" eval --model "$tmp/x-cal.safetensors" $data \
  --sample-seed 5
expect 2 "fitted with --chains 4" "$mexd" eval --model "$tmp/x-cal.safetensors" $data --chains 8
expect 2 "fitted with --sampler ddim" "$mexd" eval --model "$tmp/x-cal.safetensors" $data \
  --sampler card
expect 2 "--coverage" "$mexd" eval --model "$tmp/a/model.safetensors" $data --coverage 0.3 \
  --calibrate "$tmp/c.safetensors"
# a slide whose features hold a NaN: named; with --skip-bad a warning and the run goes on
cp -r "$tmp/d2" "$tmp/bad"
/usr/bin/python3 - "$tmp/bad/h5_files/slide_003.h5" <<'PY'
import sys
try:
    import h5py
except ImportError:
    sys.exit(0)
with h5py.File(sys.argv[1], "r+") as f:
    f["features"][2, 1] = float("nan")
PY
if /usr/bin/python3 -c "import h5py" 2>/dev/null; then
  expect 1 "slide_003" "$mexd" train adapter --data "$tmp/bad" --labels "$tmp/bad/labels.csv" \
    --out "$tmp/z" $tiny --epochs 1 $dev --quiet
  "$mexd" train adapter --data "$tmp/bad" --labels "$tmp/bad/labels.csv" --out "$tmp/z2" $tiny \
    --epochs 1 $dev --quiet --skip-bad 2>"$tmp/err"
  grep -q "slide_003" "$tmp/err" || fail "--skip-bad: no warning naming slide_003"
fi
echo "train-check: every stage trained and evaluated; kill + resume identical; errors clear"
