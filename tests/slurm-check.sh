#!/bin/sh
# slurm-check.sh SRCDIR MEXD_EXE: pipelines/slurm-classify.sh as a real Slurm array job.
#
# Starts a private single-node Slurm (munged, slurmctld, slurmd from Debian's slurm-wlm and munge,
# with their own socket, ports, state and configuration under a temporary directory: nothing of
# the machine's is touched), submits the array job over a manifest of three generated slides in
# two shards, waits for it, merges, and compares the merged summary with one `mexd classify` over
# the same manifest: they must be equal byte for byte.  Skipped (exit 77) with a message where
# Slurm cannot start: not root, the packages missing, no vips/tiffset for the slides.
set -eu
# under AddressSanitizer: full stacks for allocations (the command runs GStreamer in-process),
# so that .ci/lsan.supp recognises GLib's intentional leak of its first quark table
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
src=$1
mexd=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
skip() { echo "slurm-check: skipped: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "the daemons need root (CI runs as root)"
for p in munged slurmctld slurmd sbatch squeue sinfo; do
  command -v "$p" >/dev/null 2>&1 || skip "$p not installed (Debian: slurm-wlm munge)"
done
command -v vips >/dev/null 2>&1 && command -v tiffset >/dev/null 2>&1 || skip "no vips/tiffset"
id munge >/dev/null 2>&1 || skip "no munge user"

W=$(mktemp -d /tmp/mexd-slurm.XXXXXX)
chmod 0755 "$W"
cleanup() {
  for f in "$W/ctld.pid" "$W/d.pid"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  [ -f "$W/munge/munged.pid" ] && kill "$(cat "$W/munge/munged.pid")" 2>/dev/null || true
  sleep 1
  rm -rf "$W"
}
trap cleanup EXIT

# munge: its own key and socket
mkdir -p "$W/munge"
dd if=/dev/urandom of="$W/munge/munge.key" bs=1024 count=1 2>/dev/null
chown -R munge:munge "$W/munge"
chmod 0755 "$W/munge"
chmod 0400 "$W/munge/munge.key"
sock="$W/munge/munge.sock"
runuser -u munge -- munged --key-file="$W/munge/munge.key" --socket="$sock" \
  --pid-file="$W/munge/munged.pid" --log-file="$W/munge/munged.log" \
  --seed-file="$W/munge/munged.seed" || skip "munged did not start"

# slurm: one node, private ports and files
H=$(hostname -s)
port=$((20000 + $$ % 20000))
mkdir -p "$W/state" "$W/spool" "$W/log"
cat >"$W/slurm.conf" <<EOF
ClusterName=mexdtest
SlurmctldHost=$H
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/ctld.pid
SlurmdPidFile=$W/d.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmctldLogFile=$W/log/ctld.log
SlurmdLogFile=$W/log/d.log
MpiDefault=none
NodeName=$H CPUs=$(nproc) RealMemory=1000 State=UNKNOWN
PartitionName=main Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$W/slurm.conf"
slurmctld || skip "slurmctld did not start ($(tail -3 "$W/log/ctld.log" 2>/dev/null))"
slurmd || skip "slurmd did not start ($(tail -3 "$W/log/d.log" 2>/dev/null))"
up=""
for _ in $(seq 1 30); do
  if sinfo -h -o %t 2>/dev/null | grep -q idle; then up=1; break; fi
  sleep 1
done
[ -n "$up" ] || skip "the Slurm node did not come up ($(sinfo 2>&1 | tail -2))"

# three slides, the test models
i=0
for seed in 7 12 14; do # seeds whose tissue passes CLAM's tcga area filter at this size
  i=$((i + 1))
  sh "$src/tests/data/make-slide.sh" "$W/slides/s$i" --seed $seed --width 4096 \
    --height 3072 --flavour aperio >/dev/null
  mv "$W/slides/s$i/synth.svs" "$W/slides/slide$i.svs"
done
printf 'slide_id,path\nslide1,slides/slide1.svs\nslide2,slides/slide2.svs\nslide3,slides/slide3.svs\n' \
  >"$W/manifest.csv"
bb="$src/tests/fixtures/gst/vit-d32.safetensors"
model="$src/tests/fixtures/mexd/model-e2.safetensors"
opts="--preset tcga --device cpu --chains 4 --heatmap-width 256 --quiet"

# the array job: 2 shards, then the merge (pipelines/slurm-classify.sh submits both)
MEXD="$mexd" sh "$src/pipelines/slurm-classify.sh" --shards 2 --wait "$W/manifest.csv" \
  "$W/out" "$bb" "$model" -- $opts >"$W/submit.log" 2>&1 ||
  { cat "$W/submit.log"; for f in "$W"/out/slurm-*.out; do cat "$f"; done; exit 1; }
cat "$W/submit.log"
for f in "$W"/out/slurm-*.out; do echo "== $f"; cat "$f"; done
[ -s "$W/out/summary.csv" ] || { echo "slurm-check: no merged summary"; exit 1; }
# one process over the same manifest
"$mexd" classify --manifest "$W/manifest.csv" --out "$W/single" --backbone "$bb" \
  --model "$model" $opts
cmp "$W/out/summary.csv" "$W/single/summary.csv" ||
  { diff "$W/out/summary.csv" "$W/single/summary.csv"; exit 1; }
echo "slurm-check: the Slurm array job (2 shards) + merge = one process over the manifest:"
cat "$W/out/summary.csv"
