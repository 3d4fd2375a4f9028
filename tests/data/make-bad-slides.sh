#!/bin/sh
# make-bad-slides.sh OUT_DIR SOURCE_SVS
#
# Slides that a reader must refuse cleanly, made from a valid slide (make-slide.sh's synth.svs):
#   truncated.svs     the first 40 % of SOURCE_SVS
#   corrupt-tiles.svs SOURCE_SVS with bytes 20 %..35 % zeroed (level-0 JPEG tiles; the
#                     directories, at the end of the file, are intact)
#   stripped.tif      SOURCE_SVS's level 0 as a valid but stripped (untiled) JPEG TIFF
#   png-renamed.svs   a PNG file (tests/data/ihc-crop.png) named .svs
#   empty.svs         zero bytes
#   dir.svs/          a directory
# What OpenSlide 3.4.1 makes of each: tests/data/README.md.
# Needs vips (libvips-tools).
set -eu

me=make-bad-slides.sh
die() { echo "$me: $*" >&2; exit 1; }
[ $# -eq 2 ] || { sed -n '2p' "$0" | sed 's/^# //' >&2; exit 2; }
out=$1 src=$2
{ [ -f "$src" ] && [ -r "$src" ]; } || die "$src: not a readable file"
command -v vips >/dev/null 2>&1 || die "vips not found (Debian: apt-get install libvips-tools)"
here=$(cd "$(dirname "$0")" && pwd)
[ -r "$here/ihc-crop.png" ] || die "$here/ihc-crop.png not found"
mkdir -p "$out" || die "cannot create $out"

size=$(wc -c <"$src" | tr -d ' ')
[ "$size" -gt 1000 ] || die "$src: too small to be a slide"

head -c $((size * 40 / 100)) "$src" >"$out/truncated.svs"

from=$((size * 20 / 100)) len=$((size * 15 / 100))
{ head -c "$from" "$src"; head -c "$len" /dev/zero; tail -c +$((from + len + 1)) "$src"; } \
  >"$out/corrupt-tiles.svs" || die "cannot write corrupt-tiles.svs"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/make-bad-slides.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP
vips tiffload "$src" "$tmp/l0.v" --page 0 || die "vips cannot read $src"
rm -f "$out/stripped.tif"
vips tiffsave "$tmp/l0.v" "$out/stripped.tif" --compression jpeg --Q 85 --strip ||
  die "vips tiffsave failed"

cp "$here/ihc-crop.png" "$out/png-renamed.svs"
: >"$out/empty.svs"
mkdir -p "$out/dir.svs"
