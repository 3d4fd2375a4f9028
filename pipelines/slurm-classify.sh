#!/bin/sh
#SBATCH --job-name=mexd-classify
# slurm-classify.sh [--shards N] [--wait] MANIFEST OUT BACKBONE MODEL [-- CLASSIFY-OPTIONS…]
#
# A cohort over a Slurm cluster: `mexd classify` as an array job of N tasks, task I classifying
# shard I/N of the manifest (slide k goes to shard k mod N), then a job that runs after all of
# them (afterok) and merges their results into OUT/summary.csv.  Run it on the login node:
#
#   sh pipelines/slurm-classify.sh --shards 8 slides.csv results/ resnet50.safetensors \
#       mexd.safetensors -- --mag 20 --device vulkan
#
# which submits `sbatch --array=0-7 slurm-classify.sh --task …` and
# `sbatch --dependency=afterok:JOB slurm-classify.sh --merge …`; --wait blocks until the merge
# has run (sbatch --wait).  Resources per task come from the usual SBATCH_* environment (e.g.
# SBATCH_PARTITION=gpu SBATCH_GRES=gpu:1) or sbatch's own defaults; the task's log is
# OUT/slurm-JOB_TASK.out.  Every slide's outputs are written atomically and finished slides are
# skipped, so a failed or pre-empted task is simply resubmitted (the same command).
#
# Other schedulers: the unit of work is `mexd classify --manifest M --shard I/N --out OUT …`
# with I from the scheduler's task index (PBS/Torque $PBS_ARRAYID, LSF $LSB_JOBINDEX − 1, SGE
# $SGE_TASK_ID − 1, HTCondor $(Process), Kubernetes indexed jobs $JOB_COMPLETION_INDEX, or a plain
# `for I in 0 … N−1` over ssh), then `mexd classify --merge --manifest M --out OUT --backbone B --model MODEL`
# once all are done.  The mexd command: $MEXD, else `mexd` on PATH.
set -eu
mexd=${MEXD:-mexd}
role=submit shards=1 wait=""
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=$2; shift 2 ;;
    --wait) wait=--wait; shift ;;
    --task) role=task; shift ;;
    --merge) role=merge; shift ;;
    *) break ;;
  esac
done
[ $# -ge 4 ] || { sed -n '3p' "$0" | sed 's/^# //' >&2; exit 2; }
manifest=$1 out=$2 backbone=$3 model=$4
shift 4
[ "${1:-}" = "--" ] && shift
abs() { case "$1" in /*) echo "$1" ;; *) echo "$(pwd)/$1" ;; esac; }

case "$role" in
  task)
    n=${SLURM_ARRAY_TASK_COUNT:?not in an array job}
    i=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))
    exec "$mexd" classify --manifest "$manifest" --shard "$i/$n" --out "$out" \
      --backbone "$backbone" --model "$model" "$@"
    ;;
  merge)
    exec "$mexd" classify --merge --manifest "$manifest" --out "$out" --backbone "$backbone" \
      --model "$model"
    ;;
esac
case "$shards" in '' | *[!0-9]* | 0) echo "slurm-classify.sh: --shards N needs N ≥ 1" >&2; exit 2 ;; esac
manifest=$(abs "$manifest") out=$(abs "$out") backbone=$(abs "$backbone") model=$(abs "$model")
mkdir -p "$out"
self=$(abs "$0")
job=$(sbatch --parsable --array=0-$((shards - 1)) --output="$out/slurm-%A_%a.out" "$self" --task \
  "$manifest" "$out" "$backbone" "$model" -- "$@")
job=${job%%;*}
echo "slurm-classify.sh: array job $job ($shards tasks)"
merge=$(sbatch --parsable $wait --dependency=afterok:"$job" --kill-on-invalid-dep=yes \
  --output="$out/slurm-merge-%j.out" "$self" --merge "$manifest" "$out" "$backbone" "$model")
echo "slurm-classify.sh: merge job ${merge%%;*} after it${wait:+ (done)}: $out/summary.csv"
