#!/bin/sh
# device-bench-check.sh SRC MEXD: bench/device.sh --quick on the Vulkan device here (lavapipe in
# CI), so that the one-command GPU benchmark cannot rot while no GPU is lent: it must finish, and
# every part (GEMM, MExD, backbones, slide reading, the pipeline, training) must give a figure of
# ours.  The figures themselves mean nothing here.
set -eu
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
MEXD=$2 sh "$src/bench/device.sh" "$tmp/out" --quick --device vulkan >"$tmp/log" 2>&1 || {
  cat "$tmp/log"; for f in "$tmp"/out/*.err; do echo "== $f"; tail -20 "$f"; done; exit 1; }
cat "$tmp/out/table.md"
for part in gemm mexd backbone read pipeline train; do
  grep -q "^| $part | [^|]*vulkan\|^| $part | [^|]*mexd\|^| $part | classify-slide" "$tmp/out/table.md" ||
    { echo "device.sh --quick gave no figure of ours for $part"; exit 1; }
done
