#!/usr/bin/python3
"""classify.py FEATURES MODEL [--device D] [--chains N] [--seed S] [--sampler card|ddim]
                              [--steps K]

Classifies slides from extracted features (CLAM .h5, DSMIL .csv, .npy; several files separated
by ';') from Python with PyGObject: the pipeline of classify-features.sh,

    mexdfeaturesrc ! mexdmoe ! mexddiffc ! fakesink

built with Gst.parse_launch, each slide's `mexd-result` element message taken off the bus, and
a table printed (slide, tiles, class, its probability, the chains' spread, seconds).  Exit 0
when every slide was classified, 1 on a pipeline error (its message on stderr), 2 on bad usage.
Uninstalled: GST_PLUGIN_PATH=build/plugins.  Needs python3-gi and gir1.2-gstreamer-1.0.
"""
import argparse
import sys
import warnings

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def array(structure, field):
    """A GstValueArray field as a list (PyGObject reads it as a GValueArray)."""
    ok, arr = structure.get_array(field)
    if not ok:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return [arr.get_nth(i) for i in range(arr.n_values)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip(),
                                 usage=__doc__.split("\n\n")[0].strip())
    ap.add_argument("features")
    ap.add_argument("model")
    ap.add_argument("--device", help="cpu, vulkan or vulkan:N (default: the best there is)")
    ap.add_argument("--chains", type=int, help="diffusion chains per slide (1..4096)")
    ap.add_argument("--seed", type=int, help="the sampling noise's seed")
    ap.add_argument("--sampler", choices=["card", "ddim"])
    ap.add_argument("--steps", type=int, help="DDIM steps")
    args = ap.parse_args()

    Gst.init(None)
    try:
        pipe = Gst.parse_launch("mexdfeaturesrc name=src ! mexdmoe name=moe ! "
                                "mexddiffc name=diffc ! fakesink")
    except GLib.Error as e:
        print(f"classify.py: {e.message} (is the mexd plugin on GST_PLUGIN_PATH?)",
              file=sys.stderr)
        return 1
    # properties set as values, not spliced into the launch string: any path works
    pipe.get_by_name("src").set_property("location", args.features)
    for name in ("moe", "diffc"):
        pipe.get_by_name(name).set_property("model", args.model)
        if args.device:
            pipe.get_by_name(name).set_property("device", args.device)
    diffc = pipe.get_by_name("diffc")
    for prop in ("chains", "seed", "steps"):
        value = getattr(args, prop)
        if value is None:
            continue
        spec = diffc.find_property(prop)
        if not spec.minimum <= value <= spec.maximum:
            print(f"classify.py: --{prop} {value} is outside {spec.minimum}..{spec.maximum}",
                  file=sys.stderr)
            return 2
        diffc.set_property(prop, value)
    if args.sampler:
        Gst.util_set_object_arg(diffc, "sampler", args.sampler)  # the GEnum by its nick

    rows, error = [], None
    bus = pipe.get_bus()
    pipe.set_state(Gst.State.PLAYING)
    while True:
        msg = bus.timed_pop_filtered(
            Gst.CLOCK_TIME_NONE,
            Gst.MessageType.ERROR | Gst.MessageType.EOS | Gst.MessageType.ELEMENT)
        if msg.type == Gst.MessageType.EOS:
            break
        if msg.type == Gst.MessageType.ERROR:
            err, _debug = msg.parse_error()
            error = f"{msg.src.get_name()}: {err.message}"
            break
        s = msg.get_structure()
        if s is None or s.get_name() != "mexd-result":
            continue
        probs = array(s, "probabilities")
        spread = array(s, "spread")
        k = s.get_value("class-index")
        rows.append((s.get_value("slide-id"), s.get_value("tiles"), s.get_value("class"),
                     probs[k], spread[k], s.get_value("seconds")))
    pipe.set_state(Gst.State.NULL)

    print(f"{'slide':<24} {'tiles':>7}  {'class':<12} {'p':>6} {'spread':>7} {'seconds':>8}")
    for slide, tiles, cls, p, sp, sec in rows:
        print(f"{slide:<24} {tiles:>7}  {cls:<12} {p:6.3f} {sp:7.3f} {sec:8.2f}")
    if error:
        print(f"classify.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
