#!/bin/sh
# results-presets.sh MEXD ROOT [SEEDS] [JOBS]: bench/results.sh on the two cohorts of issue 19
# (`mexd synth-bags --preset camelyon16-like` and `--preset bracs-like`, data seed 1: the same
# splits for every run) for training seeds 1..SEEDS (5), JOBS runs at a time (2), each
# single-threaded, then the table with intervals (bench/results_ci.py).  Resumable: run it again
# and it goes on where it stopped (a finished run is kept, an interrupted one resumes; a second
# driver on the same ROOT takes the runs the first is not running).  Each job's log:
# ROOT/log-PRESET-sSEED.txt.  With MEXD_RESULTS_RAW=DIR, each finished job's raw files (eval-*,
# pred-*, the training logs and the job's log; not the models or the cohort) are copied to
# DIR/PRESET/sSEED/, to be committed as they come.
set -eu
[ $# -ge 2 ] || { sed -n '2,4p' "$0" | sed 's/^# //' >&2; exit 2; }
mexd=$1 root=$2 seeds=${3:-5} jobs=${4:-2}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$root"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MEXD_THREADS=1
for p in camelyon16-like bracs-like; do # the cohorts first, one at a time
  [ -f "$root/$p/labels.csv" ] || "$mexd" synth-bags --preset "$p" --seed 1 --out "$root/$p" --force --quiet
done
s=1
while [ "$s" -le "$seeds" ]; do
  printf '%s\n' "camelyon16-like $s" "bracs-like $s"
  s=$((s + 1))
done |
  xargs -P "$jobs" -L 1 sh -c 'sh "$0/results.sh" "$1" "$2" $3 $4 40 12 >>"$2/log-$3-s$4.txt" 2>&1 || echo "$3-s$4 failed (see $2/log-$3-s$4.txt)"
    if [ -n "${MEXD_RESULTS_RAW:-}" ] && [ -d "$2/$3/s$4" ]; then
      mkdir -p "$MEXD_RESULTS_RAW/$3/s$4"
      for f in "$2/$3/s$4"/eval-*.json "$2/$3/s$4"/pred-*.csv "$2/$3/s$4"/*/log.jsonl; do
        [ -f "$f" ] || continue
        case $f in */log.jsonl) d=$(basename "$(dirname "$f")"); cp "$f" "$MEXD_RESULTS_RAW/$3/s$4/log-$d.jsonl" ;;
        *) cp "$f" "$MEXD_RESULTS_RAW/$3/s$4/" ;; esac
      done
      cp "$2/log-$3-s$4.txt" "$MEXD_RESULTS_RAW/"
    fi' "$here" "$mexd" "$root"
/usr/bin/python3 "$here/results_ci.py" "$root"
