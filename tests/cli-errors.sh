#!/bin/sh
# cli-errors.sh MEXD: bad usage exits 2, a failure while running exits 1, each with one clear line
# on stderr naming the problem (and never a crash: exit codes above 2 fail the test).
mexd=${1:?usage: cli-errors.sh MEXD}
fails=0
check() { # expected-code pattern args...
  want=$1; pat=$2; shift 2
  err=$("$mexd" "$@" 2>&1 >/dev/null); got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL: mexd $* exited $got, expected $want ($err)"; fails=$((fails + 1))
  elif ! printf '%s' "$err" | grep -q -- "$pat"; then
    echo "FAIL: mexd $*: message \"$err\" lacks \"$pat\""; fails=$((fails + 1))
  else
    echo "ok: mexd $* -> $got: $err"
  fi
}
check 2 "usage" 
check 2 "unknown command" frobnicate
check 2 "give M N K" bench gemm 4 4
check 2 "N -4 is outside 1..1048576" bench gemm 4 -4 4
check 2 "bad argument" bench gemm 4 x 4
check 2 "f32 or f16" bench gemm 4 4 4 --dtype f64
check 1 "not a device" bench gemm 4 4 4 --device tpu
err=$(MEXD_DEVICE=gpu9 "$mexd" bench gemm 4 4 4 2>&1 >/dev/null); got=$?
if [ "$got" -ne 1 ] || ! printf '%s' "$err" | grep -q MEXD_DEVICE; then
  echo "FAIL: a bad MEXD_DEVICE gave exit $got: $err"; fails=$((fails + 1))
else
  echo "ok: MEXD_DEVICE=gpu9 -> $got: $err"
fi
check 2 "unknown benchmark" bench conv
check 2 "give --model M and --features BAG" forward
check 2 "card or ddim" forward --model a --features b --sampler euler
check 2 "paper or official" forward --model a --features b --compat authors
check 1 "/nonexistent/model.safetensors" forward --model /nonexistent/model.safetensors --features b --device cpu
check 2 "--experts 1 is outside 2..16" bench mexd --experts 1
fx=$(dirname "$0")/fixtures
check 1 "3-dimensional but" forward --model "$fx/mexd/model-e2.safetensors" --features "$fx/features/f4.npy" --device cpu
check 1 "not a mexd model file" forward --model "$fx/safetensors/mixed.safetensors" --features "$fx/features/f4.npy" --device cpu
check 1 "this is a backbone file" forward --model "$fx/backbones/resnet-tiny.safetensors" --features "$fx/features/f4.npy" --device cpu
check 1 "this is a MExD model file" extract --backbone "$fx/mexd/model-e2.safetensors" --tiles "$fx/backbones/tiles" --out /tmp/never.h5 --device cpu
check 1 "has no .png tiles" extract --backbone "$fx/backbones/resnet-tiny.safetensors" --tiles "$fx/mexd" --out /tmp/never.h5 --device cpu
check 2 "give --backbone" extract --tiles "$fx/backbones/tiles"
# every subcommand documents itself
for c in classify convert demo devices eval extract forward synth-bags tiles train bench; do
  if [ "$c" = convert ] && ! /usr/bin/python3 -c "import torch" 2>/dev/null; then continue; fi
  out=$("$mexd" $c --help 2>&1); got=$?
  if [ "$got" -ne 0 ] || ! printf '%s' "$out" | grep -qi "usage"; then
    echo "FAIL: mexd $c --help exited $got: $out"; fails=$((fails + 1))
  else
    echo "ok: mexd $c --help"
  fi
done
check 2 "unexpected argument" devices --frobnicate
check 2 "give the slides" classify --backbone a --model b
check 2 "--shard is I/N" classify --manifest m.csv --shard x --backbone a --model b
check 1 "/nonexistent/m.safetensors" classify /tmp/x.svs --backbone a --model /nonexistent/m.safetensors
check 2 "stage first" train
check 2 "unknown training stage" train dance --data a --labels b --out c
check 2 "give --model M, --data DIR and --labels CSV" eval
check 1 "/nonexistent/m.safetensors" eval --model /nonexistent/m.safetensors --data a --labels b
check 2 "--train-slides" demo --train-slides 1
check 2 "unexpected argument" demo extra
check 2 "--classes" synth-bags --out /tmp/never-synth --classes 7
check 2 "unknown benchmark" bench frobnicate
check 2 "--stage\|unknown training stage" bench train --stage dance
# a whole run: JSON with the class and the probabilities
out=$("$mexd" forward --model "$fx/mexd/model-e2.safetensors" --features "$fx/mexd/bag-n7.npy" --device cpu --chains 4 --json 2>&1); got=$?
if [ "$got" -ne 0 ] || ! printf '%s' "$out" | grep -q '"probabilities"'; then
  echo "FAIL: mexd forward on bag-n7.npy exited $got: $out"; fails=$((fails + 1))
else
  echo "ok: mexd forward on bag-n7.npy"
fi
# the help shows its non-ASCII characters under a UTF-8 locale (mexd sets LC_CTYPE from the
# environment), and stays ASCII under C; C.UTF-8 is built into Debian 12's glibc
if locale -a 2>/dev/null | grep -qi '^c\.utf-\?8$'; then
  if LC_ALL=C.UTF-8 "$mexd" synth-bags --help 2>&1 | grep -q "distance Δ of a lesion"; then
    echo "ok: help in a UTF-8 locale"
  else
    echo "FAIL: mexd synth-bags --help under C.UTF-8 does not show Δ"; fails=$((fails + 1))
  fi
fi
exit $fails
