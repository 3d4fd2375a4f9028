#!/bin/sh
# install-check.sh SRC BUILD: `meson install` into a staging folder (DESTDIR), then, against that
# copy only: the public headers (mexd.h alone) and mexd.pc compile and link the README's C example
# (examples/classify-bag.c), which classifies a fixture bag; the installed plugin loads in
# gst-inspect-1.0 (GST_PLUGIN_PATH and, as the copy is not at its prefix, LD_LIBRARY_PATH); the
# installed `mexd` runs, `mexd demo` included (its script from the installed data folder).
# Nothing of the source tree is on the include path.
set -eu
src=$1
build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$build" --destdir "$tmp/dest" --no-rebuild --quiet >"$tmp/log" 2>&1 ||
  { cat "$tmp/log"; exit 1; }
prefix=$(meson introspect --buildoptions "$build" |
  /usr/bin/python3 -c 'import json,sys; print({o["name"]: o["value"] for o in json.load(sys.stdin)}["prefix"])')
libdir=$(meson introspect --buildoptions "$build" |
  /usr/bin/python3 -c 'import json,sys; print({o["name"]: o["value"] for o in json.load(sys.stdin)}["libdir"])')
root=$tmp/dest$prefix
lib=$root/$libdir
for f in "$root/include/mexd/mexd.h" "$lib/pkgconfig/mexd.pc" "$root/bin/mexd" \
         "$lib/gstreamer-1.0/libgstmexd.so"; do
  [ -f "$f" ] || { echo "not installed: ${f#$tmp/dest}"; exit 1; }
done
# the .pc of the staged copy: its prefix moved under the staging folder
mkdir "$tmp/pc"
sed "s|^prefix=.*|prefix=$root|" "$lib/pkgconfig/mexd.pc" >"$tmp/pc/mexd.pc"
flags=$(PKG_CONFIG_PATH=$tmp/pc pkg-config --cflags --libs mexd)
case " $flags " in *"$src"*) echo "pkg-config points into the source tree: $flags"; exit 1 ;; esac
# shellcheck disable=SC2086
${CC:-cc} -std=c11 -Wall -Wextra -Werror -o "$tmp/classify-bag" "$src/examples/classify-bag.c" $flags
out=$(cd "$tmp" && MEXD_DEVICE=cpu LD_LIBRARY_PATH=$lib ./classify-bag \
  "$src/tests/fixtures/mexd/model-e2.safetensors" "$src/tests/fixtures/mexd/bag-n7.npy")
echo "$out"
echo "$out" | grep -q "7 instances on cpu.*: class [01]$" || { echo "unexpected output"; exit 1; }
# a usage error is exit 2, a missing file exit 1 with a message
rc=0; LD_LIBRARY_PATH=$lib "$tmp/classify-bag" >/dev/null 2>&1 || rc=$?
[ $rc = 2 ] || { echo "classify-bag without arguments: exit $rc, expected 2"; exit 1; }
rc=0; LD_LIBRARY_PATH=$lib "$tmp/classify-bag" "$tmp/none.safetensors" x.npy 2>"$tmp/err" || rc=$?
[ $rc = 1 ] && grep -q "none.safetensors" "$tmp/err" || { echo "missing model: exit $rc"; cat "$tmp/err"; exit 1; }
# the installed tool and plugin; `mexd demo` (a small cohort) and `mexd convert` from the staged
# copy, in a folder outside the source tree, with the staged data folder (MEXD_DATA_DIR: the copy
# is not at its prefix)
LD_LIBRARY_PATH=$lib "$root/bin/mexd" devices >/dev/null
for f in make-slide.sh ihc-crop.png convert.py; do
  [ -f "$root/share/mexd/$f" ] || { echo "not installed: share/mexd/$f"; exit 1; }
done
if command -v vips >/dev/null && command -v tiffset >/dev/null; then
  (cd "$tmp" && MEXD_DATA_DIR=$root/share/mexd LD_LIBRARY_PATH=$lib \
     GST_PLUGIN_PATH=$lib/gstreamer-1.0 GST_REGISTRY=$tmp/registry.bin \
     "$root/bin/mexd" demo --out "$tmp/demo" --train-slides 6 --test-slides 2 --quiet) \
    >"$tmp/demo.log" 2>&1 || { cat "$tmp/demo.log"; exit 1; }
  cat "$tmp/demo.log"
fi
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  MEXD_DATA_DIR=$root/share/mexd LD_LIBRARY_PATH=$lib "$root/bin/mexd" convert --help >/dev/null ||
    { echo "the staged mexd convert failed"; exit 1; }
fi
if command -v gst-inspect-1.0 >/dev/null; then
  GST_PLUGIN_PATH=$lib/gstreamer-1.0 GST_REGISTRY=$tmp/registry.bin LD_LIBRARY_PATH=$lib \
    gst-inspect-1.0 mexdmoe >"$tmp/inspect" 2>&1 || { cat "$tmp/inspect"; exit 1; }
  grep -q "$lib/gstreamer-1.0/libgstmexd.so" "$tmp/inspect" ||
    { echo "gst-inspect found another copy of the plugin:"; grep -i filename "$tmp/inspect"; exit 1; }
fi
echo "install: headers, mexd.pc, the C example, mexd and the plugin from the staged copy"
