#!/bin/sh
# setup.sh: everything a fresh Debian 12 machine needs, then a configured and built tree.
#   ./setup.sh                      installs the missing packages of debian-packages.txt
#                                   (apt-get; through sudo when not root), configures build/ with
#                                   meson if needed, and builds it
#   MEXD_BUILD_DIR=dir              another build directory
#   MEXD_MESON_ARGS="-Dwerror=true" meson options for the configuration (applied to an existing
#                                   build directory too)
set -eu
cd "$(dirname "$0")"
build=${MEXD_BUILD_DIR:-build}
args=${MEXD_MESON_ARGS:-}

want=$(grep -v '^[[:space:]]*#' debian-packages.txt | tr -s ' \n' ' ')
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup.sh: installing:$missing"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
fi

if [ ! -f "$build/build.ninja" ]; then
  # shellcheck disable=SC2086
  meson setup "$build" $args
elif [ -n "$args" ]; then
  # shellcheck disable=SC2086
  meson configure "$build" $args
fi
meson compile -C "$build"
