#!/bin/sh
# uncertainty.sh MEXD ROOT [SEEDS...]: the risk–coverage and calibration of docs/RESULTS.md
# (issue 19) for the runs of bench/results-presets.sh in ROOT — TransMIL, Dyn-MoE (ρ) and MExD
# (Diff-C) of both presets, training seeds SEEDS (1 2 3 4 5):
#   1. `mexd eval --split val --val-fraction 0.2 --seed S --calibrate`: the temperature (and, for
#      MExD, the referral spread keeping 90 % of the slides) fitted on the validation split the
#      training carved → ROOT/PRESET/sS/cal-MODEL.safetensors, unc-val-MODEL.json (the val
#      metrics) and unc-cal-MODEL.json (the calibration the model file carries: T, the val NLL
#      and ECE before and after, the referral spread);
#   2. `mexd eval --split test` of the calibrated file → unc-test-MODEL.json (selective
#      classification, ECE before and after the temperature, the referral) and unc-pred-MODEL.csv
#      (per-slide probabilities before the temperature, and MExD's spread);
#   3. `mexd eval --split test` of the model itself → unc-test-MODEL-raw.json (eval-MODEL.json of
#      bench/results.sh was made before eval reported the selective and calibration blocks).
# For seed 1 also the reliability diagram of the calibrated file, reliability-MODEL.png (the
# probabilities before the temperature on the left, after it on the right).  The chains use
# --sample-seed S as bench/results.sh did (the calibration records it, and a calibrated MExD is
# evaluated with it).  Resumable: an output
# already present is not made again (each is written as a .part and moved into place).  One
# mexd at a time, single-threaded (MEXD_THREADS=1).  Then: python3 bench/uncertainty_table.py ROOT
set -eu
[ $# -ge 2 ] || { sed -n '2,4p' "$0" | sed 's/^# //' >&2; exit 2; }
mexd=$1 root=$2
shift 2
[ $# -gt 0 ] || set -- 1 2 3 4 5
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export MEXD_THREADS="${MEXD_THREADS:-1}"
device=${MEXD_RESULTS_DEVICE:-cpu}
log() { echo "$(date +%H:%M:%S) $tag: $*"; }

# the "mexd.calibration" entry of a model file's safetensors header, as JSON
calibration_of() {
  /usr/bin/python3 -c 'import json, struct, sys
f = open(sys.argv[1], "rb")
n = struct.unpack("<Q", f.read(8))[0]
print(json.loads(f.read(n))["__metadata__"]["mexd.calibration"])' "$1"
}

t_all=$(date +%s)
for preset in camelyon16-like bracs-like; do
  data="$root/$preset"
  [ -f "$data/labels.csv" ] || { echo "uncertainty.sh: no cohort $data (bench/results-presets.sh)" >&2; exit 1; }
  for seed in "$@"; do
    out="$data/s$seed"
    tag="$preset-s$seed"
    io="--data $data/h5_files --labels $data/labels.csv --device $device --sample-seed $seed --json --quiet"
    for m in transmil moe mexd; do
      model="$out/$m/model.safetensors"
      cal="$out/cal-$m.safetensors"
      [ -f "$model" ] || { log "no $model; skipped"; continue; }
      # 1. the calibration, fitted on the validation split the training carved
      if ! [ -f "$cal" ] || ! [ -s "$out/unc-val-$m.json" ]; then
        t0=$(date +%s)
        rm -f "$cal.part"
        # shellcheck disable=SC2086
        "$mexd" eval --model "$model" $io --split val --val-fraction 0.2 --seed "$seed" \
          --calibrate "$cal.part" >"$out/unc-val-$m.json.part"
        mv "$cal.part" "$cal"
        mv "$out/unc-val-$m.json.part" "$out/unc-val-$m.json"
        log "calibrate $m on val: $(($(date +%s) - t0)) s"
      fi
      if ! [ -s "$out/unc-cal-$m.json" ]; then
        calibration_of "$cal" >"$out/unc-cal-$m.json.part"
        mv "$out/unc-cal-$m.json.part" "$out/unc-cal-$m.json"
      fi
      # 2. the calibrated file on the test split (and its reliability diagram for seed 1)
      png=""
      if [ "$seed" = 1 ]; then
        png="$out/reliability-$m.png"
        [ -s "$png" ] && png=""
      fi
      if ! [ -s "$out/unc-test-$m.json" ] || ! [ -s "$out/unc-pred-$m.csv" ] || [ -n "$png" ]; then
        t0=$(date +%s)
        # shellcheck disable=SC2086
        "$mexd" eval --model "$cal" $io --split test --out "$out/unc-pred-$m.csv.part" \
          ${png:+--reliability "$png.part"} >"$out/unc-test-$m.json.part"
        [ -z "$png" ] || mv "$png.part" "$png"
        mv "$out/unc-pred-$m.csv.part" "$out/unc-pred-$m.csv"
        mv "$out/unc-test-$m.json.part" "$out/unc-test-$m.json"
        log "test $m calibrated: $(($(date +%s) - t0)) s; $(tr -d '\n ' <"$out/unc-test-$m.json" |
          sed 's/.*"ece":\([^,]*\),.*"temperature":\([^,]*\),"ece_calibrated":\([^,]*\),.*/ECE \1 → \3 (T \2)/')"
      fi
      # 3. the model itself on the test split
      if ! [ -s "$out/unc-test-$m-raw.json" ]; then
        t0=$(date +%s)
        # shellcheck disable=SC2086
        "$mexd" eval --model "$model" $io --split test >"$out/unc-test-$m-raw.json.part"
        mv "$out/unc-test-$m-raw.json.part" "$out/unc-test-$m-raw.json"
        log "test $m: $(($(date +%s) - t0)) s"
      fi
    done
  done
done
echo "$(date +%H:%M:%S) uncertainty.sh: done in $(($(date +%s) - t_all)) s"
