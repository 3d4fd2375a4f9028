#!/bin/sh
# bench/cpu-vs-torch.sh [--mexd PATH] [--work DIR] [--out DIR] [--quick] [--only a|b|c]
#
# mexd's cpu backend beside PyTorch (Debian's python3-torch, /usr/bin/python3) in one run, on the
# same cores, and the ratios (ours / PyTorch, higher is better for us; docs/PERFORMANCE.md's CPU
# table comes from this script):
#   (a) slide → features: `mexd extract --slide` (the whole command's wall clock: loading, tissue,
#       reading, network, writing) against bench/torch_extract.py (CLAM's CPU loop: the same tile
#       coordinates, openslide-python read_region, torchvision ResNet-50 trunc, channels-last,
#       batch 64, all cores; its time excludes importing torch and building the model), fp32 and
#       bf16, and the features compared (ours against PyTorch's, bf16 against fp32);
#   (b) backbones, images/s at batch 64: ResNet-50-trunc, ViT-B/16, CTransPath (`mexd bench
#       backbone`) against bench/torch_backbone.py (NCHW and channels-last: the better of the two),
#       fp32 and bf16 (torch.autocast);
#   (c) MExD: stage 1 and CARD 1000 × 32 at N = 10,000, D = 768 (`mexd bench mexd`) against the
#       PyTorch reference (bench/torch_mexd.py; the faster of all cores and one thread), and adapter #1 at N = 100,000 against N = 10,000
#       (ours; the issue's scaling line: within 12×) with the peak resident memory.
# Weights are seeded random (bench/torch_backbone.py --save, converted by tools/convert.py; the
# figures do not depend on the values) and the slide synthetic (tests/data/make-slide.sh, 8192 ×
# 6144, preset bwh_biopsy: 377 tiles); both are made once in the work folder (default
# /tmp/mexd-cpu-vs-torch) and reused.  Every JSON line goes to OUT (default WORK/out), the table
# to standard output.  --quick: batch 16 and one timed repetition (a smoke run, not a figure).
# Takes ~25 min on a 2-core machine (~5 with --quick).  Run it on an otherwise idle machine: both
# sides use every core, and another job beside them makes both slower by different amounts.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
mexd=$top/build/tools/mexd
work=/tmp/mexd-cpu-vs-torch
out=
quick=0
only=abc
py=/usr/bin/python3
while [ $# -gt 0 ]; do
  case $1 in
    --mexd) mexd=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --only) only=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cpu-vs-torch.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
case $only in *[!abc]*|'') echo "cpu-vs-torch.sh: --only takes a, b, c or a mix (abc)" >&2; exit 2 ;; esac
[ -x "$mexd" ] || { echo "cpu-vs-torch.sh: $mexd is not built (meson setup build && ninja -C build)" >&2; exit 1; }
"$py" -c 'import torch, torchvision, openslide, h5py' 2>/dev/null ||
  { echo "cpu-vs-torch.sh: $py lacks torch/torchvision/openslide/h5py (apt-get install python3-torch python3-torchvision python3-openslide python3-h5py)" >&2; exit 1; }
out=${out:-$work/out}
mkdir -p "$work" "$out"
cores=$("$py" -c 'import os; print(len(os.sched_getaffinity(0)))')
if [ $quick = 1 ]; then batch=16; reps=1; else batch=64; reps=2; fi
log=$out/log.txt
: >"$log"
export MEXD_DEVICE=cpu

note() { printf '%s\n' "$*" >&2; }
now() { "$py" -c 'import time; print(time.time())'; }
# jget FILE KEY: KEY of the last JSON line of FILE
jget() { "$py" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])[sys.argv[2]])' "$1" "$2"; }
ratio() { "$py" -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print("%.2f" % (a / b) if b > 0 else "-")' "$1" "$2"; }
bf16_cpu=$(grep -q avx512_bf16 /proc/cpuinfo && echo 1 || echo 0)

# ---- weights and the slide, made once ----
for arch in resnet50-trunc vit-b16 ctranspath; do
  [ -s "$work/$arch.safetensors" ] && continue
  note "making $arch weights in $work"
  (cd "$work" && "$py" "$here/torch_backbone.py" --arch $arch --batch 1 --reps 1 --save "$work/$arch.pth" >>"$log" 2>&1)
  case $arch in resnet50-trunc) kind=resnet50; extra= ;; vit-b16) kind=vit; extra="--arch vit-b16" ;; *) kind=ctranspath; extra= ;; esac
  # shellcheck disable=SC2086
  "$py" "$top/tools/convert.py" $kind "$work/$arch.pth" "$work/$arch.safetensors.tmp" $extra >>"$log" 2>&1
  mv "$work/$arch.safetensors.tmp" "$work/$arch.safetensors"
done
if [ ! -s "$work/slide/patches.h5" ]; then
  note "making the slide in $work/slide"
  sh "$top/tests/data/make-slide.sh" "$work/slide" --seed 7 --width 8192 --height 6144 --flavour aperio >>"$log" 2>&1
  "$mexd" tiles "$work/slide/synth.svs" --preset bwh_biopsy --out "$work/slide/patches.h5" >>"$log" 2>&1
fi

precisions=fp32
[ $bf16_cpu = 1 ] && precisions="fp32 bf16"
# the table's rows: those of the parts run now replace theirs from an earlier run (--only)
rows=$out/rows.txt
touch "$rows"
grep -v "^[$only]|" "$rows" >"$rows.keep" || true
mv "$rows.keep" "$rows"
row() { printf '%s\n' "$*" >>"$rows"; }
# torch_run OUT CMD…: PyTorch's figure, or a line saying it failed (the table says so)
torch_run() {
  o=$1; shift
  if ! "$@" >"$o" 2>>"$log"; then
    echo "{\"failed\": true, \"images_per_s\": 0, \"tiles_per_s\": 0}" >"$o"
    note "  PyTorch failed (see $log)"
  fi
}

# ---- (a) slide → features ----
case $only in *a*)
  for p in $precisions; do
    note "(a) slide → features, $p: PyTorch"
    tf=
    [ $p = bf16 ] && tf=--bf16
    # shellcheck disable=SC2086
    "$py" "$here/torch_extract.py" "$work/slide/synth.svs" "$work/slide/patches.h5" \
      "$work/resnet50-trunc.pth" --batch $batch --threads "$cores" --channels-last $tf \
      --out "$work/torch-$p.npy" >"$out/a-torch-$p.json" 2>>"$log"
    note "(a) slide → features, $p: mexd"
    rm -f "$work/ours-$p.h5"
    t0=$(now)
    /usr/bin/time -f '%M' -o "$work/rss-$p" "$mexd" extract --backbone "$work/resnet50-trunc.safetensors" \
      --slide "$work/slide/synth.svs" --preset bwh_biopsy --batch $batch --precision $p \
      --out "$work/ours-$p.h5" -q 2>>"$log"
    t1=$(now)
    "$py" - "$work" "$p" "$t0" "$t1" >"$out/a-ours-$p.json" <<'EOF'
import json, sys
import h5py, numpy as np
w, p, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
f = h5py.File(f"{w}/ours-{p}.h5", "r")
ours = f["features"][:]
pf = h5py.File(f"{w}/slide/patches.h5", "r")["coords"]
coords = pf[:]
assert (f["coords"][:] == coords).all(), "other tiles"
# tiles reaching past the slide's edge differ by design: there OpenSlide gives transparent pixels,
# which CLAM's convert("RGB") turns black and our reader white (glass; lib/wsi/slide.c), so the
# features are compared over the tiles wholly inside the slide
size = int(pf.attrs["patch_size_level0"])
W, H = (int(v) for v in pf.attrs["level_dim"])
inside = (coords[:, 0] + size <= W) & (coords[:, 1] + size <= H)
ref = np.load(f"{w}/torch-fp32.npy")
def err(a, b):
    return float(np.linalg.norm(a[inside] - b[inside]) / np.linalg.norm(b[inside]))
r = {"bench": "mexd_extract", "precision": p, "tiles": len(ours), "seconds": round(t1 - t0, 3),
     "tiles_per_s": round(len(ours) / (t1 - t0), 2),
     "peak_rss_mib": round(int(open(f"{w}/rss-{p}").read().split()[-1]) / 1024),
     "compared_tiles": int(inside.sum()), "err_vs_torch_fp32": err(ours, ref)}
if p != "fp32":
    o32 = h5py.File(f"{w}/ours-fp32.h5", "r")["features"][:]
    r["err_vs_ours_fp32"] = err(ours, o32)
print(json.dumps(r))
EOF
    a=$(jget "$out/a-ours-$p.json" tiles_per_s); b=$(jget "$out/a-torch-$p.json" tiles_per_s)
    vs32=
    [ $p = bf16 ] && vs32="against PyTorch's fp32 pipeline: **$(ratio "$a" "$(jget "$out/a-torch-fp32.json" tiles_per_s)")×**; "
    row "a|slide → features, ResNet-50-trunc, $p (tiles/s)|$a|$b|$(ratio "$a" "$b")|${vs32}features vs PyTorch fp32: $("$py" -c 'import sys; print("%.1e" % float(sys.argv[1]))' "$(jget "$out/a-ours-$p.json" err_vs_torch_fp32)") (normwise, the $(jget "$out/a-ours-$p.json" compared_tiles) tiles inside the slide), peak $(jget "$out/a-ours-$p.json" peak_rss_mib) MiB"
  done ;;
esac

# ---- (b) backbones, images/s ----
case $only in *b*)
  for arch in resnet50-trunc vit-b16 ctranspath; do
    for p in $precisions; do
      note "(b) $arch $p batch $batch: mexd"
      "$mexd" bench backbone --backbone "$work/$arch.safetensors" --batch $batch --reps $reps \
        --precision $p --json >"$out/b-ours-$arch-$p.json" 2>>"$log"
      best=0
      for layout in nchw cl; do
        [ $layout = cl ] && [ $arch = vit-b16 ] && continue # no convolution to lay out but the patch embedding
        note "(b) $arch $p batch $batch: PyTorch $layout"
        fl=
        [ $layout = cl ] && fl=--channels-last
        [ $p = bf16 ] && fl="$fl --bf16"
        # shellcheck disable=SC2086
        torch_run "$out/b-torch-$arch-$p-$layout.json" sh -c 'cd "$1" && shift && exec "$@"' sh "$work" \
          "$py" "$here/torch_backbone.py" --arch $arch --batch $batch --reps $reps --threads "$cores" $fl
        v=$(jget "$out/b-torch-$arch-$p-$layout.json" images_per_s)
        best=$("$py" -c 'import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))' "$best" "$v")
      done
      a=$(jget "$out/b-ours-$arch-$p.json" images_per_s)
      vs32=
      [ $p = bf16 ] && vs32="against PyTorch's fp32: **$(ratio "$a" "$(sed -n 's/.*|\([0-9.]*\)|[0-9.-]*|PyTorch.*/\1/p' "$rows" | tail -n 1)")×**; "
      if [ "$best" = 0.0 ] || [ "$best" = 0 ]; then
        row "b|$arch, $p, batch $batch (images/s)|$a|failed|-|PyTorch failed in this mode (log.txt)"
      else
        row "b|$arch, $p, batch $batch (images/s)|$a|$best|$(ratio "$a" "$best")|${vs32}PyTorch: the better of NCHW and channels-last"
      fi
    done
  done ;;
esac

# ---- (c) MExD ----
case $only in *c*)
  # PyTorch's best: every core, and one thread (its small per-step products of the sampler can be
  # faster without OpenMP's hand-offs); the faster of the two for each figure
  : >"$out/c-torch-all.json"
  for th in "$cores" 1; do
    note "(c) MExD N = 10,000: PyTorch reference, $th thread(s)"
    "$py" "$here/torch_mexd.py" --device cpu --n 10000 --dim 768 --chains 32 --reps $reps \
      --threads "$th" >>"$out/c-torch-all.json" 2>>"$log"
  done
  "$py" -c 'import json,sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
best = dict(rs[0]); best["threads"] = "best of %s" % ",".join(str(r["threads"]) for r in rs)
for k in ("ms_stage1", "ms_card_1000"):
    best[k] = min(r[k] for r in rs)
print(json.dumps(best))' "$out/c-torch-all.json" >"$out/c-torch.json"
  note "(c) MExD N = 10,000: mexd"
  "$mexd" bench mexd --n 10000 --dim 768 --device cpu --reps $reps --json >"$out/c-ours.json" 2>>"$log"
  s1=$("$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(round(d["ms_adapter1"] + d["ms_moe"], 2))' "$out/c-ours.json")
  t1=$(jget "$out/c-torch.json" ms_stage1)
  row "c|MExD stage 1, N = 10,000 (ms)|$s1|$t1|$(ratio "$t1" "$s1")|ratio = PyTorch ms / ours"
  s2=$(jget "$out/c-ours.json" ms_diffusion); t2=$(jget "$out/c-torch.json" ms_card_1000)
  row "c|CARD 1000 steps × 32 chains (ms)|$s2|$t2|$(ratio "$t2" "$s2")|ratio = PyTorch ms / ours"
  if [ $quick = 0 ]; then
    note "(c) adapter #1 at N = 100,000: mexd"
    "$mexd" bench mexd --n 100000 --dim 768 --device cpu --reps 1 --json >"$out/c-ours-100k.json" 2>>"$log"
    a10=$(jget "$out/c-ours.json" ms_adapter1); a100=$(jget "$out/c-ours-100k.json" ms_adapter1)
    row "c|adapter #1, N = 100,000 against N = 10,000 (ms)|$a100|$a10|$(ratio "$a100" "$a10")|ours only: the time ratio (target ≤ 12); peak $(jget "$out/c-ours-100k.json" peak_rss_mib) MiB"
  fi ;;
esac

# ---- the table ----
echo "# bench/cpu-vs-torch.sh$([ $quick = 1 ] && echo ' --quick'), $(date -u +%Y-%m-%d), $cores cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $("$mexd" --version), PyTorch $("$py" -c 'import torch; print(torch.__version__)')"
echo
echo "| | job | mexd | PyTorch | ratio | notes |"
echo "|---|---|---:|---:|---:|---|"
while IFS='|' read -r part job a b r n; do
  echo "| $part | $job | $a | $b | **$r** | $n |"
done <"$rows"
echo
echo "(ratio: how many times faster mexd is; JSON lines in $out)"
