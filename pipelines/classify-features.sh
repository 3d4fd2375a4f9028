#!/bin/sh
# classify-features.sh FEATURES MODEL [element properties...]
#
# Classifies slides from features extracted before (CLAM .h5, DSMIL .csv, .npy; several files
# separated by ';'), one `mexd-result` message per slide on the bus (printed by gst-launch -m):
#
#   gst-launch-1.0 -m mexdfeaturesrc location=FEATURES ! mexdmoe model=MODEL ! \
#       mexddiffc model=MODEL ! fakesink
#
# name=value arguments go to the element with that property (mexdmoe: mode; mexddiffc: sampler,
# steps, chains, seed, eta; both: device).  Uninstalled: GST_PLUGIN_PATH=build/plugins.
set -eu
[ $# -ge 2 ] || { sed -n '2p' "$0" | sed 's/^# //' >&2; exit 2; }
feats=$1 model=$2
shift 2
moe_props="" diffc_props=""
for kv in "$@"; do
  case "${kv%%=*}" in
    mode) moe_props="$moe_props $kv" ;;
    sampler|steps|chains|seed|eta) diffc_props="$diffc_props $kv" ;;
    device) moe_props="$moe_props $kv"; diffc_props="$diffc_props $kv" ;;
    *) echo "classify-features.sh: unknown property ${kv%%=*}" >&2; exit 2 ;;
  esac
done
# shellcheck disable=SC2086
exec gst-launch-1.0 -m mexdfeaturesrc location="$feats" \
  ! mexdmoe model="$model" $moe_props \
  ! mexddiffc model="$model" $diffc_props \
  ! fakesink
