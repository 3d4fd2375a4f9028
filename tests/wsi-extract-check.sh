#!/bin/sh
# wsi-extract-check.sh SRCDIR MEXD_EXE: `mexd extract --slide` gives the features that
# `mexd extract --tiles` gives for the same tiles cut by openslide-python (the independent reader):
# at level 0 (CLAM's grid) and at half the resolution (--mpp 1.0: level 1, no resize).  Also the
# coordinates equal those of `mexd tiles`.  Exit 77 (skip) without vips/tiffset/python modules.
set -eu
src=$1
mexd=$2
py=/usr/bin/python3
command -v vips >/dev/null 2>&1 && command -v tiffset >/dev/null 2>&1 || { echo "no vips/tiffset: skip"; exit 77; }
$py -c 'import openslide, h5py, numpy, PIL' 2>/dev/null || { echo "no openslide-python/h5py/PIL: skip"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sh "$src/tests/data/make-slide.sh" "$tmp/s" --seed 5 --width 2048 --height 1536 --flavour aperio >/dev/null
bb="$src/tests/fixtures/backbones/resnet-tiny.safetensors"
for mode in level mpp; do
  if [ $mode = level ]; then opt="--level 0 --size 256"; lvl=0; size=256
  else opt="--mpp 1.0 --size 128"; lvl=1; size=128; fi
  "$mexd" tiles "$tmp/s/synth.svs" --preset bwh_biopsy $opt --out "$tmp/p.h5" -q
  "$mexd" extract --backbone "$bb" --slide "$tmp/s/synth.svs" --preset bwh_biopsy $opt \
      --device cpu --batch 7 --threads 3 --out "$tmp/fs.h5" -q
  rm -rf "$tmp/tiles" && mkdir "$tmp/tiles"
  $py - "$tmp" $lvl $size <<'PY'
import sys, h5py, openslide, numpy as np
from PIL import Image
tmp, lvl, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
coords = h5py.File(f"{tmp}/p.h5")["coords"][:]
s = openslide.OpenSlide(f"{tmp}/s/synth.svs")
for i, (x, y) in enumerate(coords):
    im = s.read_region((int(x), int(y)), lvl, (size, size))
    bg = Image.new("RGB", im.size, (255, 255, 255))
    bg.paste(im, mask=im.split()[3])  # transparent (outside the slide) as white
    bg.save(f"{tmp}/tiles/t{i:05d}_{x}_{y}.png")
PY
  "$mexd" extract --backbone "$bb" --tiles "$tmp/tiles" --device cpu --out "$tmp/ft.h5" -q
  $py - "$tmp" $mode <<'PY'
import sys, h5py, numpy as np
tmp, mode = sys.argv[1], sys.argv[2]
p = h5py.File(f"{tmp}/p.h5")["coords"][:]
fs, ft = h5py.File(f"{tmp}/fs.h5"), h5py.File(f"{tmp}/ft.h5")
a, b = fs["features"][:], ft["features"][:]
assert len(p) > 10, f"only {len(p)} tiles"
assert (fs["coords"][:] == p).all(), "extract --slide coordinates differ from mexd tiles"
assert (ft["coords"][:] == p).all(), "tile-name coordinates differ"
err = np.abs(a - b).max() / np.abs(b).max()
print(f"{mode}: {len(p)} tiles, features --slide vs --tiles (openslide-python): max rel err {err:.2e}")
assert err < 1e-5, err
PY
done
