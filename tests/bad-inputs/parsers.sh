#!/bin/sh
# parsers.sh SRCDIR MEXD TEST_BAD_PARSERS: the suite's bad files (suite.py --emit-parsers) fed to
# libmexd's parsers in one process (parsers.c).  Under AddressSanitizer an impossible allocation
# (a file claiming 10^12 features) must return NULL as it does without it, as the code expects.
set -eu
src=$1
mexd=$2
parsers=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 "$src/tests/bad-inputs/suite.py" --src "$src" --mexd "$mexd" \
  --emit-parsers "$tmp/files"
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:allocator_may_return_null=1"
exec "$parsers" "$tmp/files"
