#!/bin/sh
# bench/device.sh OUT_DIR [--quick] [--device vulkan:0] [--models DIR] [--slide FILE]
#                 [--budget SECONDS]
#
# Every GPU row of docs/PERFORMANCE.md in one command, ours beside PyTorch's on the same machine:
# GEMM (f32, f16 storage; 512³, 2048³, 4096³), MExD per slide (N = 10,000 and 100,000), backbones
# at batch 256 (ResNet-50-trunc fp32/fp16, ViT-B/16 and CTransPath fp16), slide reading (1..16
# threads), the classify-slide GStreamer pipeline and a training step of stage `moe`.  Each
# measurement is one JSON line in OUT_DIR/*.jsonl (one file per part), a part's errors in
# OUT_DIR/PART.err; OUT_DIR/table.md is the table printed at the end.
#
# On the GPU machine (../shared/gpu/README.md; the budget there is short: everything together
# stops by --budget, default 540 s, a part that does not fit is skipped and says so):
#   here:  tools made beforehand in .gpu/ (bench/device.sh --prepare .gpu makes the weights and
#          the slide here, where torchvision, vips and convert.py are), then the bundle:
#          ../shared/gpu/bundle.sh .gpu/bundle.tar.xz build/tools/mexd build/plugins/libgstmexd.so
#   there: (after the unpack lines of the README) bench/device.sh $OUT --models .gpu --slide .gpu/slide/synth.svs
# PyTorch runs on CUDA when it has it; otherwise (and always with --quick) on the CPU, marked so.
#
# --quick: tiny sizes and the test fixtures on whatever device is given (CI runs it on lavapipe,
# so that this script cannot rot): a minute, and its figures mean nothing.
# --prepare DIR: make the model files (seeded random weights: resnet50-trunc, vit-b16, ctranspath
# as .pth and .safetensors) and a synthetic slide in DIR, here, then stop.
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }
out=
quick=0
device=vulkan:0
models=
slide=
budget=540
prepare=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1; shift ;;
    --device) device=${2:?}; shift 2 ;;
    --models) models=${2:?}; shift 2 ;;
    --slide) slide=${2:?}; shift 2 ;;
    --budget) budget=${2:?}; shift 2 ;;
    --prepare) prepare=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "device.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "device.sh: one OUT_DIR only" >&2; exit 2; }; out=$1; shift ;;
  esac
done
case $budget in ''|*[!0-9]*) echo "device.sh: --budget takes whole seconds" >&2; exit 2 ;; esac

# mexd: the bundle's (on PATH there), else this checkout's build
if [ -n "${MEXD:-}" ]; then mexd=$MEXD
elif [ -x "$top/build/tools/mexd" ]; then mexd=$top/build/tools/mexd
else mexd=$(command -v mexd || echo mexd); fi
# a Python that has torch: Debian's here, the machine's own there
py=
for p in /usr/bin/python3 python3; do
  if "$p" -c 'import torch' 2>/dev/null; then py=$p; break; fi
done

if [ -n "$prepare" ]; then
  [ -n "$py" ] || { echo "device.sh --prepare: no python3 with torch" >&2; exit 1; }
  mkdir -p "$prepare" || exit 1
  for arch in resnet50-trunc vit-b16 ctranspath; do
    [ -s "$prepare/$arch.safetensors" ] && continue
    (cd "$prepare" && "$py" "$here/torch_backbone.py" --arch $arch --batch 1 --reps 1 --save "$prepare/$arch.pth") || exit 1
    case $arch in resnet50-trunc) k=resnet50; x= ;; vit-b16) k=vit; x="--arch vit-b16" ;; *) k=ctranspath; x= ;; esac
    # shellcheck disable=SC2086
    "$py" "$top/tools/convert.py" $k "$prepare/$arch.pth" "$prepare/$arch.safetensors" $x || exit 1
  done
  [ -s "$prepare/slide/synth.svs" ] ||
    sh "$top/tests/data/make-slide.sh" "$prepare/slide" --seed 7 --width 8192 --height 6144 --flavour aperio || exit 1
  echo "device.sh: $prepare holds the weights and the slide"
  exit 0
fi

[ -n "$out" ] || { usage >&2; exit 2; }
mkdir -p "$out" || exit 1
start=$(date +%s)
tdev=cpu
if [ -n "$py" ] && [ $quick = 0 ] && "$py" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  tdev=cuda
fi
fx=$top/tests/fixtures

left() { echo $((budget - ($(date +%s) - start))); }
# run PART LIMIT CMD…: CMD's standard output appended to OUT/PART.jsonl, its errors to PART.err,
# under `timeout` of at most LIMIT seconds and what is left of the budget
run() {
  part=$1; lim=$2; shift 2
  l=$(left)
  if [ "$l" -lt 5 ]; then
    echo "{\"part\": \"$part\", \"skipped\": \"the budget of $budget s is spent\"}" >>"$out/$part.jsonl"
    return 0
  fi
  [ "$lim" -gt "$l" ] && lim=$l
  timeout "$lim" "$@" >>"$out/$part.jsonl" 2>>"$out/$part.err"
  rc=$?
  if [ $rc != 0 ]; then
    what=$(printf '%s' "$*" | tr -d '"\\' | tr '\n' ' ' | cut -c1-300)
    echo "{\"part\": \"$part\", \"failed\": \"exit $rc ($part.err): $what\"}" >>"$out/$part.jsonl"
  fi
  return 0
}

# the plugin of this checkout's build, when that is the mexd used
case $mexd in "$top"/build/*) export GST_PLUGIN_PATH="$top/build/plugins${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}" ;; esac
"$mexd" devices --json >"$out/devices.json" 2>"$out/devices.err"

# ---- GEMM ----
if [ $quick = 1 ]; then sizes=128; else sizes="512 2048 4096"; fi
for s in $sizes; do
  run gemm 120 "$mexd" bench gemm $s $s $s --device "$device" --json
  run gemm 120 "$mexd" bench gemm $s $s $s --device "$device" --dtype f16 --json
  if [ -n "$py" ]; then
    run gemm 60 "$py" "$here/torch_gemm.py" $s $s $s --device $tdev
    [ $tdev = cuda ] && run gemm 60 "$py" "$here/torch_gemm.py" $s $s $s --device cuda --dtype f16
  fi
done

# ---- MExD per slide ----
if [ $quick = 1 ]; then
  run mexd 120 "$mexd" bench mexd --model "$fx/mexd/model-e2.safetensors" --n 200 --chains 4 --device "$device" --reps 1 --warmup 0 --json
  [ -n "$py" ] && run mexd 120 "$py" "$here/torch_mexd.py" --device cpu --n 200 --dim 32 --chains 4 --reps 1 --threads 1
else
  run mexd 120 "$mexd" bench mexd --n 10000 --dim 768 --device "$device" --reps 5 --json
  run mexd 120 "$mexd" bench mexd --n 100000 --dim 768 --device "$device" --reps 2 --json
  [ -n "$py" ] && run mexd 120 "$py" "$here/torch_mexd.py" --device $tdev --n 10000 --reps 5
fi

# ---- backbones ----
if [ $quick = 1 ]; then
  run backbone 120 "$mexd" bench backbone --backbone "$fx/backbones/resnet-tiny.safetensors" --device "$device" --batch 2 --reps 1 --json
  run backbone 120 "$mexd" bench backbone --backbone "$fx/backbones/vit-tiny.safetensors" --device "$device" --batch 2 --reps 1 --precision fp16 --json
  [ -n "$py" ] && run backbone 120 "$py" "$here/torch_backbone.py" --arch resnet50-trunc --device cpu --batch 1 --reps 1
elif [ -n "$models" ]; then
  for a in resnet50-trunc vit-b16 ctranspath; do
    ps=fp16
    [ $a = resnet50-trunc ] && ps="fp32 fp16"
    for p in $ps; do
      run backbone 90 "$mexd" bench backbone --backbone "$models/$a.safetensors" --device "$device" --batch 256 --reps 5 --precision $p --json
    done
    if [ -n "$py" ]; then
      [ $a = resnet50-trunc ] && run backbone 90 "$py" "$here/torch_backbone.py" --arch $a --device $tdev --batch 256 --reps 5
      [ $tdev = cuda ] && run backbone 90 "$py" "$here/torch_backbone.py" --arch $a --device cuda --batch 256 --reps 5 --fp16 --channels-last
    fi
  done
else
  echo '{"part": "backbone", "skipped": "no --models DIR (bench/device.sh --prepare DIR makes it)"}' >>"$out/backbone.jsonl"
fi

# ---- slide reading, the pipeline ----
if [ $quick = 1 ] && [ -z "$slide" ] && command -v vips >/dev/null 2>&1; then
  sh "$top/tests/data/make-slide.sh" "$out/slide" --seed 7 --width 2048 --height 1536 --flavour aperio >"$out/slide.log" 2>&1 &&
    slide=$out/slide/synth.svs
fi
if [ -n "$slide" ]; then
  if [ $quick = 1 ]; then th=1,2; r=1; else th=1,2,4,8,16; r=5; fi
  run read 120 "$mexd" bench read "$slide" --preset bwh_biopsy --threads $th --reps $r --json
  if command -v gst-launch-1.0 >/dev/null 2>&1; then
    if [ $quick = 1 ]; then bb=$fx/gst/vit-d32.safetensors; else bb=$models/resnet50-trunc.safetensors; fi
    run pipeline 120 sh -c 'o=$(sh "$1" "$2" "$3" "$4" "preset=bwh_biopsy" "device=$5" "batch-size=64" 2>&1) || { printf "%s\n" "$o" >&2; exit 1; }
      printf "%s\n" "$o" | sed -n "s/^\([0-9]*\) tiles in \([0-9.]*\) s: \([0-9.]*\) tiles\/s$/{\"bench\": \"classify-slide\", \"device\": \"$5\", \"tiles\": \1, \"seconds\": \2, \"tiles_per_s\": \3}/p"' \
      sh "$here/gst_classify_slide.sh" "$slide" "$bb" "$fx/mexd/model-e2.safetensors" "$device"
  fi
else
  echo '{"part": "read", "skipped": "no --slide"}' >>"$out/read.jsonl"
fi

# ---- training ----
if [ $quick = 1 ]; then
  run train 120 "$mexd" bench train --stage moe --bags 2 --n 64 --dim 32 --width 16 --heads 2 --landmarks 8 --device "$device" --steps 1 --warmup 0 --json
else
  run train 150 "$mexd" bench train --stage moe --bags 270 --n 8000 --dim 768 --device "$device" --steps 2 --warmup 1 --json
fi

# ---- the table ----
tpy=${py:-python3}
"$tpy" - "$out" >"$out/table.md" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
print("| part | what | figure |")
print("|---|---|---|")
bad = 0
for f in sorted(glob.glob(os.path.join(out, "*.jsonl"))):
    part = os.path.basename(f)[:-6]
    for line in open(f):
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
        except ValueError:
            bad += 1
            print(f"| {part} | FAILED | not JSON: {line[:120]} |")
            continue
        if "skipped" in d or "failed" in d:
            bad += "failed" in d
            print(f"| {part} | {d.get('skipped') and 'skipped' or 'FAILED'} | {d.get('skipped') or d.get('failed')} |")
            continue
        keys = ("gflops", "ms_adapter1", "ms_moe", "ms_diffusion", "ms_stage1", "ms_card_1000",
                "images_per_s", "tiles_per_s", "s_per_epoch", "s_per_step")
        fig = ", ".join(f"{k} {d[k]}" for k in keys if k in d)
        what = ", ".join(str(d[k]) for k in ("bench", "reader", "device", "dtype", "arch", "precision", "m", "n",
                                              "k", "batch", "threads", "tiles") if k in d)
        print(f"| {part} | {what} | {fig} |")
sys.exit(1 if bad else 0)
EOF
rc=$?
cat "$out/table.md"
echo "device.sh: $(( $(date +%s) - start )) s; JSON in $out"
exit $rc
