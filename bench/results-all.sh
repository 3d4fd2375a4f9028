#!/bin/sh
# results-all.sh MEXD ROOT [JOBS]: bench/results.sh for the six cohorts of docs/RESULTS.md (2 and
# 3 classes × seeds 1, 2, 3), JOBS at a time (2), each single-threaded, then the table.
set -eu
[ $# -ge 2 ] || { sed -n '2,3p' "$0" | sed 's/^# //' >&2; exit 2; }
mexd=$1 root=$2 jobs=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$root"
export OPENBLAS_NUM_THREADS=1
printf '%s\n' "2 1" "3 1" "2 2" "3 2" "2 3" "3 3" |
  xargs -P "$jobs" -L 1 sh -c 'sh "$0/results.sh" "$1" "$2" $3 $4 40 12 >>"$2/log-c$3-s$4.txt" 2>&1 || echo "c$3-s$4 failed (see $2/log-c$3-s$4.txt)"' "$here" "$mexd" "$root"
/usr/bin/python3 "$here/results_table.py" "$root"
