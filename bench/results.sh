#!/bin/sh
# results.sh MEXD ROOT COHORT SEED [EPOCHS] [PATIENCE]: the protocol of docs/RESULTS.md for one
# synthetic cohort and seed — ABMIL, TransMIL, Dyn-MoE (ρ), MExD (Diff-C) and the two ablations,
# all trained by `mexd train` with selection on the validation split carved from train, each
# evaluated once on the test split (`mexd eval --json` → eval-*.json, per-slide pred-*.csv).
#   MEXD      the mexd command (build/tools/mexd)
#   ROOT      where the cohort (made by mexd synth-bags if missing) and the runs go
#   COHORT    2 or 3: the small cohorts of issue 7, `synth-bags --classes COHORT --seed SEED`
#             (a new cohort per seed), runs in ROOT/cCOHORT-sSEED; or a preset, camelyon16-like
#             or bracs-like (issue 19): one cohort `synth-bags --preset COHORT --seed 1` in
#             ROOT/COHORT for every seed (the same splits), SEED the training seed, runs in
#             ROOT/COHORT/sSEED
#   EPOCHS    of the slide-level stages (40; diffusion: 100); PATIENCE: early stop (12; diffusion 20)
#   MEXD_RESULTS_SYNTH="OPTIONS" (presets only): more `mexd synth-bags` options for making the
#   cohort, e.g. "--min-fraction 0.01 --max-fraction 0.05" (docs/RESULTS.md's moderate cohort);
#   give the cohort its own ROOT, since an existing ROOT/COHORT is used as it is
#   MEXD_RESULTS_LANDMARKS=L: TransMIL's Nyström landmarks at the small size (32; the paper's 256:
#   32 wash a lesion of a few % out on some seeds, docs/RESULTS.md)
#   MEXD_RESULTS_SIZE=paper (width 512, 8 heads, 256 landmarks, lr 2e-4, the paper's; the default
#   for the small cohorts) or small (width 64, 2 heads, 32 landmarks, lr 1e-3 for the slide-level
#   stages: `mexd demo`'s sizes, minutes a run instead of up to an hour; the default for presets)
# A run already finished (its model.safetensors and eval file present) is not redone, and an
# interrupted one resumes (--resume), so the script can be restarted.  OPENBLAS_NUM_THREADS=1
# and two cohorts at once use both cores of a 2-core machine best (bench/results-all.sh,
# bench/results-presets.sh).
set -eu
[ $# -ge 4 ] || { sed -n '2,4p' "$0" | sed 's/^# //' >&2; exit 2; }
mexd=$1 root=$2 cohort=$3 seed=$4 epochs=${5:-40} patience=${6:-12}
case $cohort in
2 | 3)
  C=$cohort
  data="$root/s$C-seed$seed"
  out="$root/c$C-s$seed"
  tag="c$C-s$seed"
  make="--classes $C --seed $seed"
  default_size=paper ;;
camelyon16-like | bracs-like)
  C=2
  [ "$cohort" = bracs-like ] && C=3
  data="$root/$cohort"
  out="$root/$cohort/s$seed"
  tag="$cohort-s$seed"
  make="--preset $cohort --seed 1 ${MEXD_RESULTS_SYNTH:-}"
  default_size=small ;;
*) echo "results.sh: COHORT is 2, 3, camelyon16-like or bracs-like, not $cohort" >&2; exit 2 ;;
esac
# (--force: a cohort whose making was interrupted is made again; the runs beside it stay.  Two
# jobs must not make the same cohort at once: bench/results-presets.sh makes them first.)
[ -f "$data/labels.csv" ] || "$mexd" synth-bags --out "$data" $make --force --quiet
mkdir -p "$out"
# one job per run folder: a second driver on the same ROOT skips what another is running (the
# lock goes with the process that holds it, also when it is killed)
exec 9>"$out/.lock"
if ! flock -n 9; then
  echo "$(date +%H:%M:%S) $tag: another job is running it; skipped"
  exit 0
fi
if [ "$C" = 2 ]; then
  classes=normal,tumor
  # Camelyon16's Dyn-MoE: the negative class is the background expert's (MEXD.md §2)
  moe="--experts 2 --alpha 0.25,0.5 --expert-of-class 0,1"
else
  classes=benign,atypical,malignant
  # the synthetic benign bags hide no lesion: benign is the background expert's class, as
  # Camelyon16's normal (docs/RESULTS.md)
  moe="--experts 3 --alpha 0.25,0.5,0.5 --expert-of-class 0,1,2"
fi
case ${MEXD_RESULTS_SIZE:-$default_size} in
paper) size="" slr="" ;;
small)
  size="--width 64 --heads 2 --landmarks ${MEXD_RESULTS_LANDMARKS:-32} --abmil-width 64 --abmil-attn 32 --diffusion-width 64"
  slr="--lr 1e-3" ;;
*) echo "results.sh: MEXD_RESULTS_SIZE must be paper or small" >&2; exit 2 ;;
esac
common="--data $data --labels $data/labels.csv --classes $classes --seed $seed --device ${MEXD_RESULTS_DEVICE:-cpu} --quiet $size"
log() { echo "$(date +%H:%M:%S) $tag: $*"; }

train() { # name stage args…
  name=$1
  shift
  if [ -f "$out/$name/model.safetensors" ] && [ -f "$out/$name/done" ]; then
    return 0
  fi
  resume=""
  [ -f "$out/$name/checkpoint.safetensors" ] && resume=--resume
  log "train $name ($*)"
  t0=$(date +%s)
  "$mexd" train "$@" $common --out "$out/$name" $resume
  echo $(($(date +%s) - t0)) >"$out/$name/done"
  log "$name done in $(cat "$out/$name/done") s"
}

evaluate() { # name model [args]
  name=$1 model=$2
  shift 2
  [ -s "$out/eval-$name.json" ] && return 0
  "$mexd" eval --model "$model" --data "$data" --labels "$data/labels.csv" --split test \
    --device "${MEXD_RESULTS_DEVICE:-cpu}" --sample-seed "$seed" --out "$out/pred-$name.csv" \
    --json --quiet "$@" >"$out/eval-$name.json.part"
  mv "$out/eval-$name.json.part" "$out/eval-$name.json"
  log "eval $name: $(tr -d '\n ' <"$out/eval-$name.json" | sed 's/.*"accuracy":\([^,]*\),"auc":\([^,]*\),.*"macro_f1":\([^,]*\),.*/ACC \1 AUC \2 F1 \3/')"
}

slide="--epochs $epochs --patience $patience $slr"
train abmil abmil $slide
evaluate abmil "$out/abmil/model.safetensors"
train transmil adapter $slide
evaluate transmil "$out/transmil/model.safetensors"
train moe moe --adapter "$out/transmil/model.safetensors" $moe $slide
evaluate moe "$out/moe/model.safetensors"
diff="--epochs 100 --patience 20"
train mexd diffusion --moe "$out/moe/model.safetensors" $diff
evaluate mexd "$out/mexd/model.safetensors"
train mexd-noise diffusion --moe "$out/moe/model.safetensors" --prior none $diff
evaluate mexd-noise "$out/mexd-noise/model.safetensors"
train moe-norouting moe --adapter "$out/transmil/model.safetensors" $moe --no-routing $slide
train mexd-norouting diffusion --moe "$out/moe-norouting/model.safetensors" $diff
evaluate mexd-norouting "$out/mexd-norouting/model.safetensors"
log "all runs evaluated"
