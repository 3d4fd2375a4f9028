#!/bin/sh
# install-check.sh SRC BUILD: `meson install` into a staging folder (DESTDIR), then, against that
# copy only: the public headers (mexd.h alone) and mexd.pc compile and link the README's C example
# (examples/classify-bag.c), which classifies a fixture bag; mexd-gst.pc and its headers compile;
# the installed plugin loads in gst-inspect-1.0 with only GST_PLUGIN_PATH; the installed `mexd`
# runs, `mexd demo` included (its script from the installed data folder, the plugin beside it).
# The install is relocatable (meson.build: $ORIGIN rpaths, data and plugin found relative to
# `mexd`), so the staged copy is run as it is, with no LD_LIBRARY_PATH and no MEXD_DATA_DIR:
# exactly what `meson setup b --prefix=P && meson install -C b` gives at P.  Nothing of the source
# tree or the build tree is on any path.
set -eu
# meson test points LD_LIBRARY_PATH at the build tree: the staged copy must do without it
unset LD_LIBRARY_PATH
src=$1
build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$build" --destdir "$tmp/dest" --no-rebuild --quiet >"$tmp/log" 2>&1 ||
  { cat "$tmp/log"; exit 1; }
opts=$(meson introspect --buildoptions "$build" | /usr/bin/python3 -c \
  'import json,sys; o={o["name"]: o["value"] for o in json.load(sys.stdin)}; print(o["prefix"]); print(o["libdir"])')
prefix=$(echo "$opts" | sed -n 1p)
libdir=$(echo "$opts" | sed -n 2p)
root=$tmp/dest$prefix
lib=$root/$libdir
for f in "$root/include/mexd/mexd.h" "$lib/pkgconfig/mexd.pc" "$root/bin/mexd" \
         "$lib/gstreamer-1.0/libgstmexd.so" "$lib/pkgconfig/mexd-gst.pc" \
         "$root/include/mexd/mexd-gst/gstmexdmeta.h" "$root/include/mexd/mexd-gst/gstmexdcontext.h"; do
  [ -f "$f" ] || { echo "not installed: ${f#$tmp/dest}"; exit 1; }
done
# the .pc of the staged copy: its prefix moved under the staging folder
mkdir "$tmp/pc"
for pc in mexd mexd-gst; do
  sed "s|^prefix=.*|prefix=$root|" "$lib/pkgconfig/$pc.pc" >"$tmp/pc/$pc.pc"
done
# no program or library of the copy looks into the build tree or the source tree for libraries
for f in "$root/bin/mexd" "$lib/gstreamer-1.0/libgstmexd.so" "$lib"/libmexd-gst.so.*.*; do
  rp=$(readelf -d "$f" | sed -n 's/.*R\(UN\)\{0,1\}PATH.*\[\(.*\)\]/\2/p')
  case "$rp" in *"$build"*|*"$src"*) echo "$f: rpath into the build: $rp"; exit 1 ;; esac
done
flags=$(PKG_CONFIG_PATH=$tmp/pc pkg-config --cflags --libs mexd)
case " $flags " in *"$src"*) echo "pkg-config points into the source tree: $flags"; exit 1 ;; esac
# shellcheck disable=SC2086
${CC:-cc} -std=c11 -Wall -Wextra -Werror -o "$tmp/classify-bag" "$src/examples/classify-bag.c" $flags
# the example is not part of the install: it finds the staged libmexd through LD_LIBRARY_PATH,
# as a program built against a non-system prefix does
out=$(cd "$tmp" && MEXD_DEVICE=cpu LD_LIBRARY_PATH=$lib ./classify-bag \
  "$src/tests/fixtures/mexd/model-e2.safetensors" "$src/tests/fixtures/mexd/bag-n7.npy")
echo "$out"
echo "$out" | grep -q "7 instances on cpu.*: class [01]$" || { echo "unexpected output"; exit 1; }
# a usage error is exit 2, a missing file exit 1 with a message
rc=0; LD_LIBRARY_PATH=$lib "$tmp/classify-bag" >/dev/null 2>&1 || rc=$?
[ $rc = 2 ] || { echo "classify-bag without arguments: exit $rc, expected 2"; exit 1; }
rc=0; LD_LIBRARY_PATH=$lib "$tmp/classify-bag" "$tmp/none.safetensors" x.npy 2>"$tmp/err" || rc=$?
[ $rc = 1 ] && grep -q "none.safetensors" "$tmp/err" || { echo "missing model: exit $rc"; cat "$tmp/err"; exit 1; }
# the GStreamer side: a program using the tile meta compiles and links with mexd-gst.pc
cat >"$tmp/meta.c" <<'EOF'
#include <mexd-gst/gstmexdmeta.h>
int main(void)
{
  gst_init(NULL, NULL);
  GstBuffer *b = gst_buffer_new();
  gst_buffer_add_mexd_tile_meta(b, "s", 0, 0, 0, 224, 224, 0.5, 0);
  int ok = gst_buffer_get_mexd_tile_meta(b) != NULL;
  gst_buffer_unref(b);
  return ok ? 0 : 1;
}
EOF
flags=$(PKG_CONFIG_PATH=$tmp/pc pkg-config --cflags --libs mexd-gst)
# shellcheck disable=SC2086
${CC:-cc} -std=c11 -Wall -Wextra -Werror -o "$tmp/meta" "$tmp/meta.c" $flags
LD_LIBRARY_PATH=$lib "$tmp/meta" || { echo "the tile meta program failed"; exit 1; }
# the installed tool and plugin, run as they are: `mexd demo` (a small cohort) and `mexd convert`
# from the staged copy, in a folder outside the source tree
ldd "$root/bin/mexd" | grep "libmexd.so" | grep -q " => $root/" ||
  { echo "the staged mexd does not load the staged libmexd:"; ldd "$root/bin/mexd"; exit 1; }
"$root/bin/mexd" devices >/dev/null
for f in make-slide.sh ihc-crop.png convert.py; do
  [ -f "$root/share/mexd/$f" ] || { echo "not installed: share/mexd/$f"; exit 1; }
done
if command -v vips >/dev/null && command -v tiffset >/dev/null; then
  (cd "$tmp" && GST_REGISTRY=$tmp/registry-demo.bin \
     "$root/bin/mexd" demo --out "$tmp/demo" --train-slides 6 --test-slides 2 --quiet) \
    >"$tmp/demo.log" 2>&1 || { cat "$tmp/demo.log"; exit 1; }
  cat "$tmp/demo.log"
fi
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  "$root/bin/mexd" convert --help >/dev/null ||
    { echo "the staged mexd convert failed"; exit 1; }
fi
if command -v gst-inspect-1.0 >/dev/null; then
  GST_PLUGIN_PATH=$lib/gstreamer-1.0 GST_REGISTRY=$tmp/registry.bin \
    gst-inspect-1.0 mexdmoe >"$tmp/inspect" 2>&1 || { cat "$tmp/inspect"; exit 1; }
  grep -q "$lib/gstreamer-1.0/libgstmexd.so" "$tmp/inspect" ||
    { echo "gst-inspect found another copy of the plugin:"; grep -i filename "$tmp/inspect"; exit 1; }
fi
echo "install: headers, mexd.pc, mexd-gst.pc, the C example, mexd and the plugin from the staged copy"
