#!/usr/bin/python3
"""The bad-input suite (issue 16, item 10): generated bad inputs fed to `mexd` and the GStreamer
plugin, and what each run must (and must not) do.  docs/RELIABILITY.md describes it.

    /usr/bin/python3 tests/bad-inputs/suite.py --mexd build/tools/mexd --src . [--jobs 2]
        [--family NAME]... [--list [--counts]] [--keep] [--timeout 30] [--report FILE]
        [--emit-parsers DIR]

Runs with Debian's python3 (numpy, h5py, cv2).  Every case is one command (a few are two: the
interrupted run and its rerun) in a fresh directory of a temporary tree; the inputs it reads are
generated there (deterministically: the same cases and bytes every run) or are fixtures of
tests/fixtures.  Each case asserts:
  (a) no signal: exit code < 0 (killed) or >= 128 fails;
  (b) no hang: the command ends within --timeout seconds (and its memory stays under
      MEXD_BADINPUT_RSS_GIB, 2 GiB: a runaway is killed and reported);
  (c) the expected exit code: 1 a failure while running, 2 bad usage, 0 for the right-answer cases;
  (d) stderr names the file (its base name at least) or the option that is wrong;
  (e) stderr holds none of FORBIDDEN (GLib/GStreamer warnings and criticals, sanitizer reports);
  (f) every input is byte-identical afterwards (sha256; every file of an input directory);
  (g) every declared output is absent or complete (the validators below), and no temporary file
      of an output (.NAME.*, NAME.*, NAME.tmp*) is left beside it after the command ends on its
      own (after a kill they may remain, but the next run must remove them).
Prints one line per failing case and ends with "N passed, N failed[, N skipped]"; exits 1 when
a case failed.
"""

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

FAMILIES = ["model", "features", "slides", "options", "outputs", "special", "interrupt", "gst",
            "memory"]
FORBIDDEN = ["GLib-WARNING", "GLib-CRITICAL", "GLib-GObject-WARNING", "GLib-GObject-CRITICAL",
             "GStreamer-CRITICAL", "GStreamer-WARNING", "AddressSanitizer", "LeakSanitizer",
             "runtime error:", "Segmentation fault", "** ("]
RSS_LIMIT = int(float(os.environ.get("MEXD_BADINPUT_RSS_GIB", "2")) * (1 << 30))
MEMORY_LIMIT = 3 << 29  # 1.5 GiB of address space for the memory family
D = 32  # the feature size of tests/fixtures/mexd/model-e2.safetensors and gst/vit-d32

# ------------------------------------------------------------------------------------------------
# cases


@dataclasses.dataclass
class Case:
    id: str
    argv: list
    expect: tuple = (1,)          # allowed exit codes; ("nonzero",): any exit > 0 (gst-launch)
    needles: tuple = ()           # stderr must hold at least one (when given)
    needles_all: tuple = ()       # stderr must hold each
    inputs: tuple = ()            # files / directories that must stay byte-identical
    outputs: tuple = ()           # (path, kind): absent or complete
    required: tuple = ()          # (path, kind): must exist and be complete (right-answer cases)
    clean_dirs: tuple = ()        # directories that must hold no temporary file at the end
    prep: tuple = ()              # ("copy"|"copytree"|"symlink"|"hardlink"|"mkdir"|"write", a, b)
    env: tuple = ()               # (name, value) added to the environment
    timeout: float = 0            # 0: --timeout
    check: str = ""               # a named right-answer check (CHECKS)
    requires: tuple = ()          # "gst", "slides", "noasan", "gst-launch"
    rlimit_as: int = 0
    interrupt: tuple = ()         # (signal name, delay s): the first run is interrupted, then rerun
    merged_output: bool = False   # look for needles / forbidden strings in stdout too (gst-launch)

    @property
    def family(self):
        return self.id.split("/", 1)[0]


def sanitize(s):
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", s)


class Ctx:
    """Paths of one run: the temporary tree T, the sources, the binary."""

    def __init__(self, root, src, mexd):
        self.root = root
        self.src = os.path.abspath(src)
        self.mexd = os.path.abspath(mexd)
        self.gen = os.path.join(root, "gen")
        self.cases = os.path.join(root, "cases")
        self.logs = os.path.join(root, "logs")
        fx = os.path.join(self.src, "tests", "fixtures")
        self.fx = fx
        self.model = os.path.join(fx, "mexd", "model-e2.safetensors")
        self.bb = os.path.join(fx, "gst", "vit-d32.safetensors")
        self.resnet = os.path.join(fx, "backbones", "resnet-tiny.safetensors")
        self.tiles = os.path.join(fx, "backbones", "tiles")
        self.bag = os.path.join(fx, "mexd", "bag-n7.npy")
        g = self.gen
        self.slide = os.path.join(g, "slides", "good.svs")
        self.slide2 = os.path.join(g, "slides", "good2.svs")
        self.cohort = os.path.join(g, "cohort")
        self.adapter = os.path.join(g, "train", "adapter", "model.safetensors")
        self.moe = os.path.join(g, "train", "moe", "model.safetensors")
        self.special = os.path.join(g, "special")

    def gp(self, *parts):
        return os.path.join(self.gen, *parts)

    def case_dir(self, cid):
        return os.path.join(self.cases, sanitize(cid.replace("/", "__")))


TINY = ["--width", "16", "--heads", "2", "--landmarks", "8", "--pinv-iterations", "3",
        "--res-conv-taps", "3"]


def M(c, *args):
    return [c.mexd] + [str(a) for a in args]


def base(path):
    return os.path.basename(path.rstrip("/"))


# ---- the safetensors files -----------------------------------------------------------------------


def st_parse(data):
    n = struct.unpack("<Q", data[:8])[0]
    hdr = json.loads(data[8:8 + n])
    meta = hdr.pop("__metadata__", None)
    buf = data[8 + n:]
    tensors = []
    for name, e in sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"]):
        b, e2 = e["data_offsets"]
        tensors.append([name, e["dtype"], list(e["shape"]), buf[b:e2]])
    return meta, tensors


def st_header(meta, tensors, entries=None):
    hdr = {}
    if meta is not None:
        hdr["__metadata__"] = meta
    off = 0
    for name, dt, shape, data in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    if entries:
        entries(hdr)
    return hdr


def st_bytes(meta, tensors, entries=None, raw_header=None, pad=True):
    if raw_header is None:
        raw_header = json.dumps(st_header(meta, tensors, entries), separators=(",", ":")).encode()
    h = raw_header
    if pad:
        h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def with_config(meta, fn):
    m = dict(meta)
    cfg = json.loads(m["mexd.config"])
    fn(cfg)
    m["mexd.config"] = json.dumps(cfg)
    return m


def setk(**kv):
    def f(cfg):
        for k, v in kv.items():
            k = k.replace("__", ".")
            if "." in k:
                a, b = k.split(".", 1)
                cfg[a][b] = v
            else:
                cfg[k] = v
    return f


def delk(key):
    def f(cfg):
        cfg.pop(key, None)
    return f


def fill(t, value, count=None):
    """Tensor t with its values (F32) replaced by `value` (all, or the first `count`)."""
    n = len(t[3]) // 4
    arr = np.frombuffer(t[3], "<f4").copy()
    arr[: (count or n)] = value
    return [t[0], t[1], t[2], arr.tobytes()]


_ST_CACHE = {}


def st_variants(data, kind):
    """(name, bytes) of bad files made from the good safetensors `data` (kind: model/backbone)."""
    key = (hashlib.sha256(data).hexdigest(), kind)
    if key not in _ST_CACHE:
        _ST_CACHE[key] = _st_variants(data, kind)
    return _ST_CACHE[key]


def _st_variants(data, kind):
    meta, T = st_parse(data)
    n = struct.unpack("<Q", data[:8])[0]
    out = []

    def add(name, b):
        out.append((name, b))

    def mt(fn):  # the tensors changed by fn (on a deep-enough copy)
        t2 = [list(t) for t in T]
        fn(t2)
        return st_bytes(meta, t2)

    add("empty", b"")
    points = [("4", 4), ("8", 8), ("9", 9), ("64", 64), ("hdr-mid", 8 + n // 2),
              ("hdr-end-1", 8 + n - 1), ("hdr-end", 8 + n), ("data-100", 8 + n + 100),
              ("half", len(data) // 2), ("last-1", len(data) - 1)]
    if kind == "backbone":
        points = [p for p in points if p[0] in ("8", "hdr-mid", "hdr-end", "half", "last-1")]
    for name, at in points:
        add("trunc-" + name, data[:at])
    rest = data[8:]
    add("hlen-2^60", struct.pack("<Q", 1 << 60) + rest)
    add("hdr-not-json", st_bytes(None, T, raw_header=b"hello, world"))
    add("config-nested-100000", st_bytes(dict(meta, **{"mexd.config": "[" * 100000}), T))
    add("config-not-json", st_bytes(dict(meta, **{"mexd.config": '{"feature_dim": 32,'}), T))
    add("format-missing", st_bytes({k: v for k, v in meta.items() if k != "mexd.format"}, T))
    add("nan-weights", mt(lambda t: t.__setitem__(0, fill(t[0], np.nan))))
    add("inf-weights", mt(lambda t: t.__setitem__(1, fill(t[1], np.inf))))
    add("tensor-missing", mt(lambda t: t.pop(len(t) - 1)))
    add("dtype-I32", mt(lambda t: t[0].__setitem__(1, "I32")))
    if kind == "model":
        add("extra-byte", data + b"\0")
        add("hlen-file+1", struct.pack("<Q", len(data) - 8 + 1) + rest)
        add("hlen-max", struct.pack("<Q", (1 << 64) - 1) + rest)
        add("hlen-0", struct.pack("<Q", 0) + rest)
        add("hlen-100MiB+1", struct.pack("<Q", 100 * (1 << 20) + 1) + rest)
        add("hdr-array", st_bytes(None, T, raw_header=b"[]"))
        add("hdr-nested-100000-brackets", st_bytes(None, T, raw_header=b"[" * 100000))
        add("hdr-nested-100000-objects", st_bytes(None, T, raw_header=b'{"a":' * 100000))
        add("hdr-nested-17-closed",
            st_bytes(None, T, raw_header=json.dumps(
                st_header(meta, T, lambda h: h.__setitem__(
                    "x", json.loads("[" * 17 + "]" * 17)))).encode()))
        good_hdr = json.dumps(st_header(meta, T), separators=(",", ":")).encode()
        add("hdr-invalid-utf8", st_bytes(None, T, raw_header=good_hdr.replace(
            b'"adapter1.fc1.weight"', b'"adapter1.fc1.w\xff\xfeight"', 1)))
        add("hdr-nul", st_bytes(None, T, raw_header=good_hdr.replace(
            b'"adapter1.fc1.weight"', b'"adapter1.fc1\x00weight"', 1)))
        add("hdr-trailing-garbage", st_bytes(None, T, raw_header=good_hdr + b" xyz"))
        first = T[0][0].encode()
        dup = good_hdr[:-1] + b',"' + first + b'":' + json.dumps(
            st_header(meta, T)[T[0][0]], separators=(",", ":")).encode() + b"}"
        add("hdr-dup-key", st_bytes(None, T, raw_header=dup))
        add("meta-not-object", st_bytes(None, T, raw_header=json.dumps(
            st_header([1, 2], T)).encode()))
        add("meta-non-string", st_bytes(dict(meta, **{"mexd.format": 5}), T))
        add("format-wrong", st_bytes(dict(meta, **{"mexd.format": "mexd-model/2"}), T))
        add("config-missing", st_bytes({"mexd.format": meta["mexd.format"]}, T))
        add("config-array", st_bytes(dict(meta, **{"mexd.config": "[1, 2, 3]"}), T))
        add("config-nested-objects-100000", st_bytes(dict(meta, **{
            "mexd.config": '{"a":' * 100000 + "1" + "}" * 100000}), T))
        for key in ["feature_dim", "width", "heads", "classes", "experts", "alpha",
                    "expert_of_class"]:
            add("config-no-" + key, st_bytes(with_config(meta, delk(key)), T))
        cfgs = [
            ("feature_dim-string", setk(feature_dim="32")),
            ("classes-number", setk(classes=5)),
            ("alpha-string", setk(alpha="x")),
            ("experts-float", setk(experts=2.5)),
            ("width-bool", setk(width=True)),
            ("diffusion-array", setk(diffusion=[])),
            ("feature_dim-1e9", setk(feature_dim=1000000000)),
            ("feature_dim-0", setk(feature_dim=0)),
            ("feature_dim-neg", setk(feature_dim=-32)),
            ("feature_dim-1e308", setk(feature_dim=1e308)),
            ("width-0", setk(width=0)),
            ("width-neg", setk(width=-64)),
            ("width-1e18", setk(width=10 ** 18)),
            ("heads-0", setk(heads=0)),
            ("heads-1e9", setk(heads=1000000000)),
            ("heads-3", setk(heads=3)),
            ("landmarks-0", setk(landmarks=0)),
            ("landmarks-neg", setk(landmarks=-1)),
            ("landmarks-1e9", setk(landmarks=1000000000)),
            ("pinv_iterations-1e9", setk(pinv_iterations=1000000000)),
            ("pinv_iterations-neg", setk(pinv_iterations=-6)),
            ("res_conv_taps-0", setk(res_conv_taps=0)),
            ("res_conv_taps-1e9", setk(res_conv_taps=1000000000)),
            ("experts-0", setk(experts=0)),
            ("experts-1", setk(experts=1)),
            ("experts-1e9", setk(experts=1000000000)),
            ("alpha-0", setk(alpha=[0, 0.5])),
            ("alpha-2", setk(alpha=[2, 0.5])),
            ("alpha-short", setk(alpha=[0.25])),
            ("expert_of_class-99", setk(expert_of_class=[99, 0])),
            ("expert_of_class-neg", setk(expert_of_class=[-1, 0])),
            ("classes-empty", setk(classes=[])),
            ("classes-1e5", setk(classes=["c%d" % i for i in range(100000)])),
            ("classes-dup", setk(classes=["a", "a"])),
            ("classes-empty-name", setk(classes=["", "tumor"])),
            ("T-0", setk(diffusion__T=0)),
            ("T-1e9", setk(diffusion__T=1000000000)),
            ("T-neg", setk(diffusion__T=-1)),
            ("diffusion-width-0", setk(diffusion__width=0)),
            ("beta_start-neg", setk(diffusion__beta_start=-1)),
            ("beta_end-2", setk(diffusion__beta_end=2.0)),
            ("beta-NaN-token", setk(diffusion__beta_start=float("nan"))),
            ("mode-bogus", setk(mode="bogus")),
            ("unknown-key", setk(widht=64)),
        ]
        for name, fn in cfgs:
            add("config-" + name, st_bytes(with_config(meta, fn), T))
        add("config-no-diffusion-tensors-kept", st_bytes(with_config(meta, delk("diffusion")), T))

        def entry(fn):
            return st_bytes(None, T, raw_header=json.dumps(st_header(meta, T, fn)).encode())
        last, t0, t1 = T[-1][0], T[0][0], T[1][0]
        add("off-out-of-range", entry(lambda h: h[last]["data_offsets"].__setitem__(
            1, h[last]["data_offsets"][1] + 4)))
        add("off-overlap", entry(lambda h: h[t1]["data_offsets"].__setitem__(
            0, h[t1]["data_offsets"][0] - 4)))
        add("off-reversed", entry(lambda h: h[t0].__setitem__(
            "data_offsets", h[t0]["data_offsets"][::-1])))
        add("off-negative", entry(lambda h: h[t0]["data_offsets"].__setitem__(0, -4)))
        add("off-huge", entry(lambda h: h[last]["data_offsets"].__setitem__(1, 1 << 62)))
        add("off-float", entry(lambda h: h[t0]["data_offsets"].__setitem__(0, 0.5)))
        add("off-three", entry(lambda h: h[t0]["data_offsets"].append(3)))
        add("dtype-F64", entry(lambda h: h[t0].__setitem__("dtype", "F64")))
        add("dtype-bogus", entry(lambda h: h[t0].__setitem__("dtype", "XYZ")))
        add("dtype-F16-nbytes", entry(lambda h: h[t0].__setitem__("dtype", "F16")))
        add("shape-swapped", entry(lambda h: h[t0].__setitem__("shape", h[t0]["shape"][::-1])))
        add("shape-negative", entry(lambda h: h[t0].__setitem__(
            "shape", [-s for s in h[t0]["shape"]])))
        add("shape-9d", entry(lambda h: h[t0].__setitem__(
            "shape", [1] * 7 + h[t0]["shape"])))
        add("shape-overflow", entry(lambda h: h[t0].__setitem__("shape", [1 << 40, 1 << 40])))
        add("shape-huge-2^40-bytes", entry(lambda h: (
            h[last].__setitem__("shape", [1 << 20, 1 << 18]),
            h[last]["data_offsets"].__setitem__(1, h[last]["data_offsets"][0] + (1 << 40)))))
        add("tensor-extra", mt(lambda t: t.append(["bogus.weight", "F32", [1], b"\0\0\0\0"])))
        add("tensor-renamed", mt(lambda t: t[0].__setitem__(0, "adapter1.fc9.weight")))
        add("nan-one-value", mt(lambda t: t.__setitem__(
            next(i for i, x in enumerate(t) if x[0] == "moe.router.0.weight"),
            fill(next(x for x in t if x[0] == "moe.router.0.weight"), np.nan, 1))))
        add("inf-diffc", mt(lambda t: t.__setitem__(
            next(i for i, x in enumerate(t) if x[0] == "diffc.out.bias"),
            fill(next(x for x in t if x[0] == "diffc.out.bias"), np.inf))))
        add("landmarks-1e8", st_bytes(with_config(meta, setk(landmarks=100000000)), T))
    else:
        add("format-model", st_bytes(dict(meta, **{"mexd.format": "mexd-model/1"}), T))
        cfg = json.loads(meta["mexd.config"])
        if cfg["arch"].startswith("vit"):
            cfgs = [("arch-bogus", setk(arch="vit-x99")), ("input_size-0", setk(input_size=0)),
                    ("input_size-neg", setk(input_size=-64)),
                    ("input_size-1e9", setk(input_size=1000000000)),
                    ("input_size-63", setk(input_size=63)), ("patch-0", setk(patch=0)),
                    ("patch-1e9", setk(patch=1000000000)), ("dim-0", setk(dim=0)),
                    ("depth-1e9", setk(depth=1000000000)), ("heads-0", setk(heads=0)),
                    ("heads-3", setk(heads=3)), ("output_dim-0", setk(output_dim=0)),
                    ("output_dim-1e9", setk(output_dim=1000000000)), ("mean-missing", delk("mean")),
                    ("mean-NaN-token", setk(mean=[float("nan")] * 3)),
                    ("std-zero", setk(std=[0, 0, 0])), ("std-short", setk(std=[1, 1])),
                    ("ln_eps-neg", setk(ln_eps=-1)), ("mlp_ratio-0", setk(mlp_ratio=0)),
                    ("mlp_ratio-1e9", setk(mlp_ratio=1e9)),
                    ("layer_scale-string", setk(layer_scale="yes")),
                    ("unknown-key", setk(dimm=32))]
        else:
            cfgs = [("blocks-1e9", setk(blocks=[1000000000, 1, 2])), ("blocks-empty", setk(blocks=[])),
                    ("width-0", setk(width=0)), ("width-neg", setk(width=-16)),
                    ("output_dim-7", setk(output_dim=7)), ("input_size-0", setk(input_size=0))]
        for name, fn in cfgs:
            add("config-" + name, st_bytes(with_config(meta, fn), T))
        add("shape-swapped", mt(lambda t: t[2].__setitem__(2, t[2][2][::-1])))
    return out


# ---- bags of features ------------------------------------------------------------------------------


def good_bag(n, d, seed):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, d)).astype("<f4"), (np.arange(n * 2).reshape(n, 2) * 256).astype("<i8")


def h5_write(path, fn):
    import h5py
    with h5py.File(path, "w", track_order=False) as f:
        fn(f)


def npy_bytes(header, data=b"", magic=b"\x93NUMPY", version=b"\x01\x00", hlen=None):
    h = header.encode("latin1")
    total = len(magic) + 2 + 2 + len(h) + 1
    h += b" " * ((64 - total % 64) % 64) + b"\n"
    n = len(h) if hlen is None else hlen
    return magic + version + struct.pack("<H", n) + h + data


def npy_of(arr, order="C"):
    descr = arr.dtype.str
    shape = "(%s)" % "".join("%d, " % s for s in arr.shape) if arr.ndim != 1 else "(%d,)" % arr.shape[0]
    if arr.ndim == 2:
        shape = "(%d, %d)" % arr.shape
    hdr = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr, "True" if order == "F" else "False", shape)
    return npy_bytes(hdr, arr.tobytes(order=order))


def csv_of(rows):
    return "".join(",".join(rows_i) + "\n" for rows_i in rows).encode()


def feature_variants():
    """(name, extension, writer(path)) of the bad bags; `name` is also the slide id stem."""
    f, c = good_bag(7, D, 1)
    out = []

    def h5(name, fn):
        out.append((name, "h5", lambda p, fn=fn: h5_write(p, fn)))

    def raw(name, ext, data):
        out.append((name, ext, lambda p, data=data: open(p, "wb").write(data)))

    def h5_then(name, mutate):
        def w(p):
            h5_write(p, lambda g: (g.create_dataset("features", data=f),
                                   g.create_dataset("coords", data=c)))
            b = bytearray(open(p, "rb").read())
            open(p, "wb").write(mutate(b))
        out.append((name, "h5", w))

    h5("h5-no-features", lambda g: g.create_dataset("coords", data=c))
    h5("h5-features-group", lambda g: g.create_group("features"))
    h5("h5-rank1", lambda g: g.create_dataset("features", data=f[:, 0]))
    h5("h5-rank3", lambda g: g.create_dataset("features", data=f.reshape(7, 4, 8)))
    h5("h5-scalar", lambda g: g.create_dataset("features", data=np.float32(1)))
    h5("h5-zero-rows", lambda g: g.create_dataset("features", shape=(0, D), dtype="f4"))
    h5("h5-zero-cols", lambda g: g.create_dataset("features", shape=(7, 0), dtype="f4"))
    h5("h5-nan", lambda g: g.create_dataset("features", data=np.where(np.arange(7 * D).reshape(7, D) == 9, np.nan, f).astype("f4")))
    h5("h5-inf", lambda g: g.create_dataset("features", data=np.full((7, D), np.inf, "f4")))
    h5("h5-neg-inf", lambda g: g.create_dataset("features", data=np.where(np.arange(7 * D).reshape(7, D) == 3, -np.inf, f).astype("f4")))

    def strings(g):
        import h5py
        g.create_dataset("features", data=np.array([b"a", b"bb"], dtype=object),
                         dtype=h5py.string_dtype())
    h5("h5-string", strings)
    h5("h5-fixed-string", lambda g: g.create_dataset("features", data=np.array([[b"1.5"] * D] * 7, dtype="S3")))
    h5("h5-int32", lambda g: g.create_dataset("features", data=np.ones((7, D), "i4")))
    h5("h5-compound", lambda g: g.create_dataset("features", data=np.zeros(7, dtype=[("a", "f4"), ("b", "i4")])))
    h5("h5-bool", lambda g: g.create_dataset("features", data=np.ones((7, D), bool)))
    h5("h5-coords-rows-mismatch", lambda g: (g.create_dataset("features", data=f),
                                             g.create_dataset("coords", data=c[:3])))
    h5("h5-coords-huge", lambda g: (g.create_dataset("features", data=f),
                                    g.create_dataset("coords", data=c * (1 << 40))))
    h5("h5-coords-rank1", lambda g: (g.create_dataset("features", data=f),
                                     g.create_dataset("coords", data=c[:, 0])))
    h5("h5-coords-float-nan", lambda g: (g.create_dataset("features", data=f),
                                         g.create_dataset("coords", data=np.full((7, 2), np.nan))))
    h5("h5-patch-size-neg", lambda g: (g.create_dataset("features", data=f),
                                       g.create_dataset("coords", data=c),
                                       g["coords"].attrs.__setitem__("patch_size", -256)))
    h5("h5-wrong-dim", lambda g: g.create_dataset("features", data=good_bag(7, 16, 2)[0]))
    h5("h5-huge-dims-sparse", lambda g: g.create_dataset(
        "features", shape=(10 ** 6, 10 ** 6), dtype="f4", chunks=(64, 64)))
    h5_then("h5-corrupt-superblock", lambda b: b[:8] + bytes(np.random.default_rng(3).integers(0, 256, 32, dtype=np.uint8)) + b[40:])
    h5_then("h5-corrupt-middle", lambda b: b[: len(b) * 3 // 10] + bytes(len(b) * 3 // 10) + b[len(b) * 6 // 10:])

    def flip(b):
        r = np.random.default_rng(4)
        for pos in r.integers(0, len(b), 40):
            b[pos] ^= 0xFF
        return bytes(b)
    h5_then("h5-corrupt-random", flip)
    h5_then("h5-trunc-half", lambda b: bytes(b[: len(b) // 2]))
    h5_then("h5-trunc-1k", lambda b: bytes(b[:1024]))
    raw("h5-signature-only", "h5", b"\x89HDF\r\n\x1a\n")
    raw("h5-empty", "h5", b"")

    rows = [["%.4f" % v for v in r] for r in f]
    raw("csv-ragged", "csv", csv_of(rows[:3] + [rows[3][:-1]] + rows[4:]))
    raw("csv-nonnumeric", "csv", csv_of(rows[:2] + [["abc"] * D] + rows[3:]))
    raw("csv-nan", "csv", csv_of(rows[:2] + [["nan"] + rows[2][1:]] + rows[3:]))
    raw("csv-inf", "csv", csv_of(rows[:2] + [["inf"] + rows[2][1:]] + rows[3:]))
    raw("csv-huge-number", "csv", csv_of(rows[:2] + [["1e400"] + rows[2][1:]] + rows[3:]))
    raw("csv-empty", "csv", b"")
    raw("csv-header-only", "csv", (",".join(str(i) for i in range(D)) + "\n").encode())
    raw("csv-blank-lines", "csv", b"\n\n\r\n\n")
    raw("csv-10mb-line", "csv", b"0.5," * (10 * (1 << 20) // 4) + b"0.5\n")
    raw("csv-10mb-nocomma", "csv", b"1" * (10 * (1 << 20)) + b"\n")
    raw("csv-binary", "csv", bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8)))
    raw("csv-wrong-dim", "csv", csv_of([r[:16] for r in rows]))
    raw("csv-empty-cell", "csv", csv_of(rows[:2] + [[""] + rows[2][1:]] + rows[3:]))
    raw("csv-quoted-comma", "csv", csv_of(rows[:2] + [['"1,5"'] + rows[2][1:]] + rows[3:]))
    raw("csv-nul", "csv", csv_of(rows).replace(b",", b"\0,", 5))
    # the RFC 4180 tokenizer (io/csv.h): a quote that is never closed, text after a closing quote
    raw("csv-open-quote", "csv", csv_of(rows[:2] + [['"0.5'] + rows[2][1:]] + rows[3:]))
    raw("csv-after-quote", "csv", csv_of(rows[:2] + [['"0.5"x'] + rows[2][1:]] + rows[3:]))

    good_hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (7, %d), }" % D
    fb = f.tobytes()
    raw("npy-bad-magic", "npy", b"\x93NUMPZ" + npy_of(f)[6:])
    raw("npy-bad-header", "npy", npy_bytes("[1, 2, 3]", fb))
    raw("npy-header-not-terminated", "npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (7, %d)" % D, fb))
    raw("npy-huge-shape", "npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }", fb))
    raw("npy-shape-overflow", "npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }", fb))
    raw("npy-fortran", "npy", npy_of(f, "F"))
    raw("npy-int32", "npy", npy_of(np.ones((7, D), "<i4")))
    raw("npy-object", "npy", npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (7, %d), }" % D, fb))
    raw("npy-truncated", "npy", npy_of(f)[:-10])
    raw("npy-extra-bytes", "npy", npy_of(f) + b"\0" * 8)
    raw("npy-nan", "npy", npy_of(np.where(np.arange(7 * D).reshape(7, D) == 5, np.nan, f).astype("<f4")))
    raw("npy-inf", "npy", npy_of(np.full((7, D), np.inf, "<f4")))
    raw("npy-hlen-huge", "npy", npy_bytes(good_hdr, fb, hlen=65535))
    raw("npy-version-9", "npy", npy_bytes(good_hdr, fb, version=b"\x09\x00"))
    raw("npy-shape-negative", "npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-7, %d), }" % D, fb))
    raw("npy-shape-3d", "npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (7, 4, 8), }", fb))
    raw("npy-shape-0rows", "npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, %d), }" % D, b""))
    raw("npy-shape-1d", "npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % (7 * D), fb))
    raw("npy-no-shape", "npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, }", fb))
    raw("npy-wrong-dim", "npy", npy_of(good_bag(7, 16, 2)[0]))
    raw("npy-empty", "npy", b"")
    return out


FEATURE_VARIANTS = None


def feature_list():
    global FEATURE_VARIANTS
    if FEATURE_VARIANTS is None:
        FEATURE_VARIANTS = feature_variants()
    return FEATURE_VARIANTS


# ---- slides --------------------------------------------------------------------------------------

APERIO = ("Aperio Image Library v12.0.15\r\n2048x1536 [0,0 2048x1536] (256x256) JPEG/RGB Q=85"
          "|AppMag = %s|MPP = %s")
SLIDE_DESC_VARIANTS = [("desc-mpp-zero", "0", "0"), ("desc-mpp-nan", "nan", "nan"),
                       ("desc-mpp-negative", "-20", "-0.5"), ("desc-mpp-huge", "1e300", "1e300"),
                       ("desc-mpp-tiny", "1e300", "1e-300")]
# the Aperio description's AppMag / MPP is unusable but tiff.XResolution is right: using the latter
# (exit 0) or refusing the slide (exit 1) are both fine; an absurd but positive MPP makes --mag 20
# impossible: exit 1 or 2 naming the slide
SLIDE_EXPECT = {"corrupt-tiles.svs": {"tiles": (0, 1)},
                "desc-mpp-zero.svs": (0, 1), "desc-mpp-nan.svs": (0, 1),
                "desc-mpp-negative.svs": (0, 1), "desc-mpp-huge.svs": (1, 2),
                "desc-mpp-tiny.svs": (1, 2)}


def slide_expect(name, cmd):
    e = SLIDE_EXPECT.get(name, (1,))
    return e.get(cmd, (1,)) if isinstance(e, dict) else e
SLIDE_BAD = ["truncated.svs", "corrupt-tiles.svs", "stripped.tif", "png-renamed.svs", "empty.svs",
             "dir.svs"]
SLIDE_MINE = ["trunc-1pct.svs", "trunc-10pct.svs", "trunc-90pct.svs", "trunc-99pct.svs",
              "header-garbage.svs", "ifd-loop.svs", "zeros.svs", "random.svs",
              "tiff-magic-only.svs", "width-huge.svs", "tilewidth-zero.svs",
              "tileoffsets-beyond.svs"] + [n + ".svs" for n, _, _ in SLIDE_DESC_VARIANTS]


def tiff_ifd0(b):
    if b[:2] != b"II" or struct.unpack("<H", b[2:4])[0] != 42:
        raise ValueError("not a little-endian classic TIFF")
    off = struct.unpack("<I", b[4:8])[0]
    n = struct.unpack("<H", b[off:off + 2])[0]
    return off, n


def tiff_set_tag(b, tag, value):
    off, n = tiff_ifd0(b)
    for i in range(n):
        e = off + 2 + 12 * i
        t, typ, cnt = struct.unpack("<HHI", b[e:e + 8])
        if t == tag:
            if typ == 3:
                b[e + 8:e + 10] = struct.pack("<H", min(value, 0xFFFF))
            else:
                b[e + 8:e + 12] = struct.pack("<I", value)
            return b
    raise ValueError("tag %d not found" % tag)


def slide_mine(good):
    b = open(good, "rb").read()
    n = len(b)
    r = np.random.default_rng(6)
    out = {}
    for pct in (1, 10, 90, 99):
        out["trunc-%dpct.svs" % pct] = b[: n * pct // 100]
    out["header-garbage.svs"] = b"II*\x00\xff\xff\xff\xff" + b[8:]
    off, cnt = tiff_ifd0(b)
    loop = bytearray(b)
    p = off + 2 + 12 * cnt
    loop[p:p + 4] = struct.pack("<I", off)
    out["ifd-loop.svs"] = bytes(loop)
    out["zeros.svs"] = bytes(n)
    out["random.svs"] = bytes(r.integers(0, 256, n, dtype=np.uint8))
    out["tiff-magic-only.svs"] = b"II*\x00\x08\x00\x00\x00"
    out["width-huge.svs"] = bytes(tiff_set_tag(tiff_set_tag(bytearray(b), 256, 0x7FFFFFFF), 257, 0x7FFFFFFF))
    out["tilewidth-zero.svs"] = bytes(tiff_set_tag(bytearray(b), 322, 0))
    out["tileoffsets-beyond.svs"] = bytes(tiff_set_tag(bytearray(b), 324, 0xFFFFFF00))
    return out


# ------------------------------------------------------------------------------------------------
# generation


def run_quiet(argv, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (shlex.join(argv), r.returncode,
                                                   r.stdout.decode(errors="replace")[-2000:]))
    return r


def write_cohort(d, bad=None, special=None):
    """A data directory: good_0..good_5 (D = 32, CLAM .h5) and optionally x_<name> (the bad bag,
    in the train split) written by bad = (name, ext, writer), or a special entry
    special = (name, ext, make(path))."""
    import h5py  # noqa: F401
    os.makedirs(d, exist_ok=True)
    lines = ["slide_id,label,split"]
    splits = ["test", "test", "train", "train", "train", "train"]
    for i in range(6):
        f, c = good_bag(9 + i, D, 100 + i)
        h5_write(os.path.join(d, "good_%d.h5" % i), lambda g, f=f, c=c: (
            g.create_dataset("features", data=f), g.create_dataset("coords", data=c)))
        lines.append("good_%d,%s,%s" % (i, ["normal", "tumor"][i % 2], splits[i]))
    for item in (bad, special):
        if item:
            name, ext, make = item
            make(os.path.join(d, "x_%s.%s" % (name, ext)))
            lines.append("x_%s,tumor,train" % name)
    open(os.path.join(d, "labels.csv"), "w").write("\n".join(lines) + "\n")


SPECIAL_KINDS = ["fifo", "devzero", "devnull", "dir", "dangling", "loop"]


def make_special(path, kind):
    """A special file at `path` (its name gives the extension)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        os.symlink("/dev/zero", path)
    elif kind == "devnull":
        os.symlink("/dev/null", path)
    elif kind == "dir":
        os.makedirs(path)
    elif kind == "dangling":
        os.symlink(path + ".nonexistent", path)
    elif kind == "loop":
        os.symlink(path + ".loop2", path)
        os.symlink(path, path + ".loop2")


def special_path(c, kind, ext):
    """The special input of `kind` named with extension ext; /dev/zero and /dev/null as they are."""
    if kind == "devzero":
        return "/dev/zero"
    if kind == "devnull":
        return "/dev/null"
    return os.path.join(c.special, "%s.%s" % (kind, ext))


def special_needle(c, kind, ext):
    p = special_path(c, kind, ext)
    return p if kind in ("devzero", "devnull") else base(p)


def generate(c, what=("all",), log=print):
    """Writes every generated input under c.gen.  Returns the set of things that could not be
    made ("slides" without vips/tiffset; "gst")."""
    missing = set()
    g = c.gen
    for sub in ("model", "backbone", "features", "slides", "cohorts", "special", "train", "misc"):
        os.makedirs(os.path.join(g, sub), exist_ok=True)
    t0 = time.monotonic()
    for name, data in st_variants(open(c.model, "rb").read(), "model"):
        open(os.path.join(g, "model", name + ".safetensors"), "wb").write(data)
    mdata = open(c.model, "rb").read()
    meta, T = st_parse(mdata)
    # F16 weights are legal (converted at load): a right-answer case
    f16 = [[n, "F16", s, np.frombuffer(b, "<f4").astype("<f2").tobytes()] for n, _, s, b in T]
    open(os.path.join(g, "model", "good-f16.safetensors"), "wb").write(st_bytes(meta, f16))
    # a crafted calibration (issue 19: mexd eval --calibrate writes it, mexd eval reads it)
    for name, cal in CAL_VARIANTS:
        open(os.path.join(g, "model", "cal-%s.safetensors" % name), "wb").write(
            st_bytes(dict(meta, **{"mexd.calibration": cal}), T))
    # a valid referral fitted with noise seed 3 and 2 chains: another seed must be refused
    open(os.path.join(g, "model", "cal-fitted-seed3.safetensors"), "wb").write(
        st_bytes(dict(meta, **{"mexd.calibration": CAL_FITTED_SEED3}), T))
    for name, data in st_variants(open(c.bb, "rb").read(), "backbone"):
        open(os.path.join(g, "backbone", name + ".safetensors"), "wb").write(data)
    for name, data in st_variants(open(c.resnet, "rb").read(), "backbone"):
        if name.startswith("config-"):
            open(os.path.join(g, "backbone", "resnet-" + name + ".safetensors"), "wb").write(data)
    for name, ext, w in feature_list():
        w(os.path.join(g, "features", "%s.%s" % (name, ext)))
    f, co = good_bag(7, D, 1)
    h5_write(os.path.join(g, "features", "good.h5"), lambda h: (
        h.create_dataset("features", data=f), h.create_dataset("coords", data=co)))
    open(os.path.join(g, "features", "good.csv"), "wb").write(csv_of([["%.6f" % v for v in r] for r in f]))
    open(os.path.join(g, "features", "good.npy"), "wb").write(npy_of(f))
    # memory: a bag whose dataset is 2.4 GB of (unwritten) fill values
    h5_write(os.path.join(g, "misc", "h5-big-sparse.h5"), lambda h: h.create_dataset(
        "features", shape=(300000, 2048), dtype="f4", chunks=(256, 256)))
    # cohorts
    write_cohort(c.cohort)
    for name, ext, w in feature_list():
        write_cohort(os.path.join(g, "cohorts", name), bad=(name, ext, w))
    write_cohort(os.path.join(g, "cohorts", "mem-big-sparse"), bad=(
        "h5-big-sparse", "h5", lambda p: shutil.copy(os.path.join(g, "misc", "h5-big-sparse.h5"), p)))
    for kind in SPECIAL_KINDS:
        write_cohort(os.path.join(g, "cohorts", "special-" + kind),
                     special=("special", "h5", lambda p, k=kind: make_special(p, k)))
        td = os.path.join(g, "special", "tiles-" + kind)
        shutil.copytree(c.tiles, td)
        make_special(os.path.join(td, "t9_216_0.png"), kind)
    # special files
    for kind in ("fifo", "dir", "dangling", "loop"):
        for ext in ("safetensors", "h5", "svs", "csv"):
            make_special(os.path.join(c.special, "%s.%s" % (kind, ext)), kind)
    # manifests, misc
    log("generated models, backbones, features, cohorts in %.1f s" % (time.monotonic() - t0))
    # slides
    if shutil.which("vips") and shutil.which("tiffset"):
        t0 = time.monotonic()
        sd = os.path.join(g, "slides")
        mk = os.path.join(c.src, "tests", "data", "make-slide.sh")
        for seed, out in ((7, c.slide), (12, c.slide2)):
            tmpd = os.path.join(sd, "make-%d" % seed)
            run_quiet(["sh", mk, tmpd, "--seed", str(seed), "--width", "2048", "--height", "1536",
                       "--flavour", "aperio"])
            os.rename(os.path.join(tmpd, "synth.svs"), out)
            shutil.rmtree(tmpd)
        run_quiet(["sh", os.path.join(c.src, "tests", "data", "make-bad-slides.sh"),
                   os.path.join(sd, "bad"), c.slide])
        for name, data in slide_mine(c.slide).items():
            open(os.path.join(sd, name), "wb").write(data)
        for name, mag, mpp in SLIDE_DESC_VARIANTS:
            p = os.path.join(sd, name + ".svs")
            shutil.copy(c.slide, p)
            run_quiet(["tiffset", "-s", "270", APERIO % (mag, mpp), p])
        with open(os.path.join(g, "misc", "manifest.csv"), "w") as m:
            m.write("path\n%s\n%s\n" % (c.slide, c.slide2))
        log("generated slides in %.1f s" % (time.monotonic() - t0))
    else:
        missing.add("slides")
    return missing


CAL_VARIANTS = [
    ("not-json", '{"temperature":'), ("array", "[1]"), ("nested", "[" * 100000),
    ("no-temperature", '{"slides": 5}'), ("temperature-0", '{"temperature": 0, "slides": 5}'),
    ("temperature-1e999", '{"temperature": 1e999, "slides": 5}'),
    ("temperature-string", '{"temperature": "1", "slides": 5}'),
    ("refer-negative", '{"temperature": 1, "slides": 5, "refer_spread": -1, "coverage": 0.9}'),
    ("refer-no-coverage", '{"temperature": 1, "slides": 5, "refer_spread": 0.1}'),
    ("coverage-2", '{"temperature": 1, "slides": 5, "refer_spread": 0.1, "coverage": 2}'),
    ("slides-0", '{"temperature": 1, "slides": 0}'), ("extra-key", '{"temperature": 1, "slides": 5, "x": 1}'),
    # a referral threshold without the sampler settings it was fitted with, or with bad ones
    ("refer-no-fitted-on", '{"temperature": 1, "slides": 5, "refer_spread": 0.1, "coverage": 0.9}'),
    ("refer-sampler-bad", '{"temperature": 1, "slides": 5, "refer_spread": 0.1, "coverage": 0.9, '
                          '"fitted_on": {"sampler": "euler", "chains": 2, "sample_seed": 0}}'),
    ("refer-seed-negative", '{"temperature": 1, "slides": 5, "refer_spread": 0.1, "coverage": 0.9, '
                            '"fitted_on": {"sampler": "card", "chains": 2, "sample_seed": -1}}'),
    ("refer-chains-0", '{"temperature": 1, "slides": 5, "refer_spread": 0.1, "coverage": 0.9, '
                       '"fitted_on": {"sampler": "card", "chains": 0, "sample_seed": 0}}'),
]


CAL_FITTED_SEED3 = ('{"temperature": 1, "slides": 5, "refer_spread": 0.1, "coverage": 0.9, '
                    '"fitted_on": {"sampler": "card", "chains": 2, "sample_seed": 3}}')


def generate_trained(c, env):
    """Tiny trained models (stage adapter and moe) on the cohort, for stage moe / diffusion."""
    run_quiet(M(c, "train", "adapter", "--data", c.cohort, "--labels",
                os.path.join(c.cohort, "labels.csv"), "--out", os.path.dirname(c.adapter),
                "--epochs", "1", "--device", "cpu", "-q", *TINY), env=env)
    run_quiet(M(c, "train", "moe", "--data", c.cohort, "--labels",
                os.path.join(c.cohort, "labels.csv"), "--out", os.path.dirname(c.moe),
                "--adapter", c.adapter, "--epochs", "1", "--device", "cpu", "-q", *TINY), env=env)
    shutil.copy(c.adapter, c.gp("model", "is-adapter.safetensors"))


# ------------------------------------------------------------------------------------------------
# the cases of each family


def fam_model(c):
    cases = []
    names = [n for n, _ in st_variants(open(c.model, "rb").read(), "model")] + ["is-adapter"]
    bnames = [n for n, _ in st_variants(open(c.bb, "rb").read(), "backbone")]
    rnames = ["resnet-" + n for n, _ in st_variants(open(c.resnet, "rb").read(), "backbone")
              if n.startswith("config-")]
    mp = lambda n: c.gp("model", n + ".safetensors")
    bp = lambda n: c.gp("backbone", n + ".safetensors")
    labels = os.path.join(c.cohort, "labels.csv")
    for n in names:
        cases.append(Case("model/forward-" + n, M(c, "forward", "--model", mp(n), "--features",
                                                  c.bag, "--device", "cpu", "--json"),
                          needles=(n + ".safetensors",), inputs=(mp(n), c.bag)))
    sub = ["empty", "trunc-half", "hlen-2^60", "hdr-not-json", "config-nested-100000",
           "config-no-classes", "config-experts-1e9", "config-classes-1e5", "nan-weights",
           "off-overlap", "shape-overflow"]
    for n in sub:
        cases.append(Case("model/eval-" + n, M(c, "eval", "--model", mp(n), "--data", c.cohort,
                                               "--labels", labels, "--device", "cpu", "-q",
                                               "--chains", "2"),
                          needles=(n + ".safetensors",), inputs=(mp(n), c.cohort)))
    for name, _ in CAL_VARIANTS:
        n = "cal-" + name
        cases.append(Case("model/eval-" + n, M(c, "eval", "--model", mp(n), "--data", c.cohort,
                                               "--labels", labels, "--device", "cpu", "-q",
                                               "--chains", "2"),
                          needles_all=(n + ".safetensors", "mexd.calibration"),
                          inputs=(mp(n), c.cohort)))
    # a rerun with other sampler settings than a calibration's referral was fitted with: usage
    # error naming both, before any work (nothing written)
    n = "cal-fitted-seed3"
    cases.append(Case("model/eval-" + n + "-other-seed",
                      M(c, "eval", "--model", mp(n), "--data", c.cohort, "--labels", labels,
                        "--device", "cpu", "-q", "--sample-seed", "4"),
                      expect=(2,), needles_all=("--sample-seed 4", "fitted with --sample-seed 3"),
                      inputs=(mp(n), c.cohort)))
    out = os.path.join(c.case_dir("model/classify-" + n + "-other-chains"), "out")
    cases.append(Case("model/classify-" + n + "-other-chains",
                      M(c, "classify", c.slide, "--backbone", c.bb, "--model", mp(n), "--preset",
                        "bwh_biopsy", "--device", "cpu", "--chains", "8", "--heatmap-width", "64",
                        "-q", "--out", out),
                      expect=(2,), needles_all=("--chains 8", "fitted with --chains 2"),
                      inputs=(mp(n), c.slide, c.bb), outputs=((out, "dir"),),
                      requires=("gst", "slides")))
    for n in ["empty", "trunc-data-100", "hdr-nested-100000-brackets", "config-nested-100000",
              "config-classes-empty", "nan-weights", "config-no-diffusion-tensors-kept",
              "off-huge"]:
        out = os.path.join(c.case_dir("model/classify-" + n), "out")
        cases.append(Case("model/classify-" + n, M(c, "classify", c.slide, "--backbone", c.bb,
                                                   "--model", mp(n), "--preset", "bwh_biopsy",
                                                   "--device", "cpu", "--chains", "2",
                                                   "--heatmap-width", "64", "-q", "--out", out),
                          needles=(n + ".safetensors",), inputs=(mp(n), c.slide, c.bb),
                          outputs=((out, "dir"),), requires=("gst", "slides")))
    for n in ["trunc-half", "config-landmarks-1e9", "nan-weights"]:
        cases.append(Case("model/bench-mexd-" + n, M(c, "bench", "mexd", "--model", mp(n), "--n",
                                                     "8", "--reps", "1", "--warmup", "0",
                                                     "--chains", "2", "--device", "cpu"),
                          needles=(n + ".safetensors",), inputs=(mp(n),)))
    # backbones
    tiles_in = (c.tiles,)
    for n in bnames + rnames:
        out = os.path.join(c.case_dir("model/extract-tiles-" + n), "f.h5")
        cases.append(Case("model/extract-tiles-" + n,
                          M(c, "extract", "--backbone", bp(n), "--tiles", c.tiles, "--device",
                            "cpu", "-q", "--out", out),
                          needles=(n + ".safetensors",), inputs=(bp(n),) + tiles_in,
                          outputs=((out, "h5feat"),)))
    for n in ["empty", "trunc-half", "config-input_size-1e9", "config-std-zero", "nan-weights"]:
        out = os.path.join(c.case_dir("model/extract-slide-" + n), "f.h5")
        cases.append(Case("model/extract-slide-" + n,
                          M(c, "extract", "--backbone", bp(n), "--slide", c.slide, "--preset",
                            "bwh_biopsy", "--device", "cpu", "-q", "--out", out),
                          needles=(n + ".safetensors",), inputs=(bp(n), c.slide),
                          outputs=((out, "h5feat"),), requires=("slides",)))
    for n in ["empty", "trunc-hdr-end", "config-patch-0", "config-output_dim-0", "nan-weights",
              "format-model"]:
        out = os.path.join(c.case_dir("model/classify-backbone-" + n), "out")
        cases.append(Case("model/classify-backbone-" + n,
                          M(c, "classify", c.slide, "--backbone", bp(n), "--model", c.model,
                            "--preset", "bwh_biopsy", "--device", "cpu", "--chains", "2",
                            "--heatmap-width", "64", "-q", "--out", out),
                          needles=(n + ".safetensors",), inputs=(bp(n), c.slide, c.model),
                          outputs=((out, "dir"),), requires=("gst", "slides")))
    for n in ["trunc-half", "config-depth-1e9", "config-input_size-1e9"]:
        cases.append(Case("model/bench-backbone-" + n,
                          M(c, "bench", "backbone", "--backbone", bp(n), "--batch", "1", "--reps",
                            "1", "--tile", "16", "--device", "cpu"),
                          needles=(n + ".safetensors",), inputs=(bp(n),)))
    # the wrong kind of file
    out = os.path.join(c.case_dir("model/extract-model-as-backbone"), "f.h5")
    cases.append(Case("model/extract-model-as-backbone",
                      M(c, "extract", "--backbone", c.model, "--tiles", c.tiles, "--device", "cpu",
                        "-q", "--out", out), needles=(base(c.model),), inputs=(c.model, c.tiles),
                      outputs=((out, "h5feat"),)))
    cases.append(Case("model/forward-backbone-as-model",
                      M(c, "forward", "--model", c.bb, "--features", c.bag, "--device", "cpu"),
                      needles=(base(c.bb),), inputs=(c.bb, c.bag)))
    cases.append(Case("model/eval-backbone-as-model",
                      M(c, "eval", "--model", c.bb, "--data", c.cohort, "--labels", labels,
                        "--device", "cpu"), needles=(base(c.bb),), inputs=(c.bb, c.cohort)))
    cases.append(Case("model/bench-backbone-model-as-backbone",
                      M(c, "bench", "backbone", "--backbone", c.model, "--batch", "1", "--reps",
                        "1", "--tile", "16", "--device", "cpu"),
                      needles=(base(c.model),), inputs=(c.model,)))
    for what, bb, model in (("model-as-backbone", c.model, c.model),
                            ("backbone-as-model", c.bb, c.bb)):
        out = os.path.join(c.case_dir("model/classify-" + what), "out")
        cases.append(Case("model/classify-" + what,
                          M(c, "classify", c.slide, "--backbone", bb, "--model", model, "--preset",
                            "bwh_biopsy", "--device", "cpu", "-q", "--out", out),
                          needles=(base(c.model) if what.startswith("model") else base(c.bb),),
                          inputs=(c.model, c.bb, c.slide), outputs=((out, "dir"),),
                          requires=("gst", "slides")))
    # right answers: the model as it is, and in F16
    for n, p in (("good", c.model), ("good-f16", mp("good-f16"))):
        cases.append(Case("model/forward-" + n, M(c, "forward", "--model", p, "--features", c.bag,
                                                  "--device", "cpu", "--json"),
                          expect=(0,), check="json_probs", inputs=(p, c.bag)))
    return cases


COHORT_EVAL = ["h5-nan", "h5-zero-rows", "h5-rank3", "h5-string", "h5-corrupt-middle",
               "h5-trunc-half", "h5-wrong-dim", "h5-huge-dims-sparse", "csv-ragged", "csv-nan",
               "csv-empty", "csv-header-only", "csv-10mb-line", "npy-bad-magic", "npy-huge-shape",
               "npy-fortran", "npy-int32", "npy-truncated", "npy-nan", "npy-hlen-huge"]
COHORT_TRAIN = ["h5-inf", "h5-no-features", "csv-nonnumeric", "npy-nan", "npy-shape-overflow",
                "h5-empty", "csv-binary", "npy-bad-header", "h5-coords-huge"]
SKIP_EVAL = ["h5-nan", "csv-ragged", "npy-truncated", "h5-corrupt-middle", "npy-huge-shape"]
SKIP_TRAIN = ["npy-int32", "h5-zero-rows", "csv-10mb-nocomma"]


def fam_features(c):
    cases = []
    fp = lambda n, e: c.gp("features", "%s.%s" % (n, e))
    for n, e, _ in feature_list():
        cases.append(Case("features/forward-" + n,
                          M(c, "forward", "--model", c.model, "--features", fp(n, e), "--device",
                            "cpu", "--json"),
                          needles=("%s.%s" % (n, e),), inputs=(fp(n, e), c.model)))
    ext = {n: e for n, e, _ in feature_list()}
    for n in COHORT_EVAL:
        d = c.gp("cohorts", n)
        out = os.path.join(c.case_dir("features/eval-" + n), "p.csv")
        cases.append(Case("features/eval-" + n,
                          M(c, "eval", "--model", c.model, "--data", d, "--labels",
                            os.path.join(d, "labels.csv"), "--device", "cpu", "-q", "--chains",
                            "2", "--out", out),
                          needles=("x_%s.%s" % (n, ext[n]),), inputs=(d, c.model),
                          outputs=((out, "csv:slide_id"),)))
    for n in COHORT_TRAIN:
        d = c.gp("cohorts", n)
        out = os.path.join(c.case_dir("features/train-" + n), "out")
        cases.append(Case("features/train-" + n,
                          M(c, "train", "adapter", "--data", d, "--labels",
                            os.path.join(d, "labels.csv"), "--out", out, "--epochs", "1",
                            "--device", "cpu", "-q", *TINY),
                          needles=("x_%s.%s" % (n, ext[n]),), inputs=(d,),
                          outputs=((out, "dir"),)))
    for n in SKIP_EVAL:
        d = c.gp("cohorts", n)
        out = os.path.join(c.case_dir("features/eval-skip-bad-" + n), "p.csv")
        cases.append(Case("features/eval-skip-bad-" + n,
                          M(c, "eval", "--model", c.model, "--data", d, "--labels",
                            os.path.join(d, "labels.csv"), "--device", "cpu", "--chains", "2",
                            "--skip-bad", "--out", out),
                          expect=(0,), needles_all=("skipped", "x_" + n), inputs=(d, c.model),
                          required=((out, "csv:slide_id"),)))
    for n in SKIP_TRAIN:
        d = c.gp("cohorts", n)
        out = os.path.join(c.case_dir("features/train-skip-bad-" + n), "out")
        cases.append(Case("features/train-skip-bad-" + n,
                          M(c, "train", "adapter", "--data", d, "--labels",
                            os.path.join(d, "labels.csv"), "--out", out, "--epochs", "1",
                            "--device", "cpu", "--skip-bad", *TINY),
                          expect=(0,), needles_all=("skipped", "x_" + n), inputs=(d,),
                          required=((os.path.join(out, "model.safetensors"), "safetensors"),),
                          outputs=((out, "dir"),), clean_dirs=(out,)))
    for e in ("h5", "csv", "npy"):
        cases.append(Case("features/forward-good-" + e,
                          M(c, "forward", "--model", c.model, "--features", fp("good", e),
                            "--device", "cpu", "--json"),
                          expect=(0,), check="json_probs", inputs=(fp("good", e), c.model)))
    return cases


def all_slides(c):
    sd = c.gp("slides")
    return ([os.path.join(sd, "bad", n) for n in SLIDE_BAD] + [os.path.join(sd, n) for n in SLIDE_MINE])


def fam_slides(c):
    cases = []
    for p in all_slides(c):
        n = base(p)
        mag = ["--mag", "20"] if n.startswith("desc-") else []
        cd = c.case_dir("slides/tiles-" + n)
        out, gj = os.path.join(cd, "p.h5"), os.path.join(cd, "t.geojson")
        expect = slide_expect(n, "tiles")
        cases.append(Case("slides/tiles-" + n,
                          M(c, "tiles", p, "--preset", "bwh_biopsy", "-q", "--out", out,
                            "--geojson", gj, *mag),
                          expect=expect, needles=(n,), inputs=(p,),
                          outputs=((out, "h5patch"), (gj, "geojson")), requires=("slides",)))
        out = os.path.join(c.case_dir("slides/extract-" + n), "f.h5")
        cases.append(Case("slides/extract-" + n,
                          M(c, "extract", "--backbone", c.bb, "--slide", p, "--preset",
                            "bwh_biopsy", "--device", "cpu", "-q", "--out", out, *mag),
                          expect=slide_expect(n, "extract"), needles=(n,), inputs=(p, c.bb),
                          outputs=((out, "h5feat"),),
                          requires=("slides",)))
        out = os.path.join(c.case_dir("slides/classify-" + n), "out")
        cases.append(Case("slides/classify-" + n,
                          M(c, "classify", p, "--backbone", c.bb, "--model", c.model, "--preset",
                            "bwh_biopsy", "--device", "cpu", "--chains", "2", "--heatmap-width",
                            "64", "-q", "--out", out, *mag),
                          expect=slide_expect(n, "classify"), needles=(n,),
                          inputs=(p, c.bb, c.model), outputs=((out, "dir"),),
                          requires=("gst", "slides")))
    for n in ["bad/truncated.svs", "bad/corrupt-tiles.svs", "bad/empty.svs", "ifd-loop.svs",
              "width-huge.svs", "desc-mpp-huge.svs"]:
        p = c.gp("slides", n)
        mag = ["--mag", "20"] if base(n).startswith("desc-") else []
        cases.append(Case("slides/bench-read-" + base(n),
                          M(c, "bench", "read", p, "--preset", "bwh_biopsy", "--max-tiles", "4",
                            "--reps", "1", "--threads", "1", *mag),
                          expect=slide_expect(base(n), "bench"), needles=(base(n),), inputs=(p,),
                          requires=("slides",)))
    # right answers
    cd = c.case_dir("slides/tiles-good")
    out, gj = os.path.join(cd, "p.h5"), os.path.join(cd, "t.geojson")
    cases.append(Case("slides/tiles-good", M(c, "tiles", c.slide, "--preset", "bwh_biopsy", "-q",
                                             "--out", out, "--geojson", gj),
                      expect=(0,), inputs=(c.slide,),
                      required=((out, "h5patch"), (gj, "geojson")), requires=("slides",)))
    return cases


# ---- options ---------------------------------------------------------------------------------------

INT_VALS = ["-1", "0", "100000", "2147483648", "1e9", "1.5", "abc"]
DBL_VALS = ["-1", "0", "1e9", "1e308", "nan", "inf", "-inf", "abc"]
SEED_VALS = ["-1", "1.5", "1e9", "nan", "abc", "18446744073709551616"]


@dataclasses.dataclass
class Opt:
    name: str
    type: str              # int, int64, double, seed (non-negative integer), list (strings given)
    lo: float = None       # hard lower bound (inclusive unless lo_open)
    hi: float = None       # hard upper bound
    lo_open: bool = False
    soft: tuple = None     # (lo, hi): values outside but within the hard range depend on the input
    odd: bool = False
    extra: tuple = ()      # more values
    values: tuple = None   # replaces the standard list
    usage: tuple = ()      # values that are always bad usage (list options)


def judge(v, o):
    """None: a legal value (no case); "usage": exit 2; "input": exit 1 or 2."""
    if o.type == "list":
        return "usage" if v in o.usage else "input"
    if o.type in ("int", "int64", "seed"):
        if not re.fullmatch(r"[+-]?\d+", v):
            return "usage"
        x = int(v)
        bits = {"int": 31, "int64": 63, "seed": 64}[o.type]
        if o.type == "seed":
            if x < 0 or x >= 1 << 64:
                return "usage"
        elif not -(1 << bits) <= x < (1 << bits):
            return "usage"
    else:
        try:
            x = float(v)
        except ValueError:
            return "usage"
        if not math.isfinite(x):
            return "usage"
    if o.lo is not None and (x < o.lo or (o.lo_open and x == o.lo)):
        return "usage"
    if o.hi is not None and x > o.hi:
        return "usage"
    if o.odd and x % 2 == 0:
        return "usage"
    if o.soft and not (o.soft[0] <= x <= o.soft[1]):
        return "input"
    return None


def values_of(o):
    if o.values is not None:
        return list(o.values)
    std = {"int": INT_VALS, "int64": INT_VALS, "double": DBL_VALS, "seed": SEED_VALS}[o.type]
    return std + [v for v in o.extra if v not in std]


GRID = [Opt("mag", "double", lo=0, lo_open=True, soft=(0.3125, 20), extra=("0.01", "1e6")),
        Opt("mpp", "double", lo=0, lo_open=True, soft=(0.5, 32), extra=("0.01",)),
        Opt("level", "int", lo=0, soft=(0, 3), extra=("99",)),
        Opt("size", "int", lo=1, hi=16384),
        Opt("step", "int", lo=0, hi=1 << 20),
        Opt("overlap", "int", lo=0, hi=255),
        Opt("seg-level", "int", lo=0, soft=(0, 3), extra=("99",)),
        Opt("sthresh", "int", lo=0, hi=255),
        Opt("mthresh", "int", lo=3, hi=255, odd=True, extra=("4",)),
        Opt("close", "int", lo=0, hi=255),
        Opt("a-t", "double", lo=0),
        Opt("a-h", "double", lo=0),
        Opt("max-holes", "int", lo=0)]
GRIDD = {o.name: o for o in GRID}
# --precision (issue 17): names only; bf16 off the cpu backend is a usage error too (below)
PRECISION = Opt("precision", "list", values=("fp64", "bogus", "", "FP32", "bf16,fp32"),
                usage=("fp64", "bogus", "", "FP32", "bf16,fp32"))
CHAINS = Opt("chains", "int", lo=1, hi=4096)
STEPS = Opt("steps", "int", lo=1, soft=(1, 1000), extra=())
ETA = Opt("eta", "double", lo=0, hi=1)
TRAIN_COMMON = [Opt("val-fraction", "double", lo=0, hi=0.999999),
                Opt("seed", "seed"),
                Opt("epochs", "int", lo=1, values=("-1", "0", "1.5", "abc", "2147483648")),
                Opt("patience", "int", lo=0, values=("-1", "1.5", "abc")),
                Opt("lr", "double", lo=0, lo_open=True, hi=1)]
# the model file's own ranges (lib/nn/model.c): what training writes must load again
TRAIN_ADAPTER = [Opt("width", "int", lo=1, hi=65536), Opt("heads", "int", lo=1, hi=1024),
                 Opt("landmarks", "int", lo=1, hi=16384), Opt("pinv-iterations", "int", lo=0, hi=100),
                 Opt("res-conv-taps", "int", lo=1, hi=1023, odd=True),
                 Opt("dropout", "double", lo=0, hi=0.999999)]
LIST_ALPHA = Opt("alpha", "list", values=("nan,0.5", "-1,0.5", "0,0.5", "2,0.5", "inf,0.5",
                                          "abc", "0.25,", ""),
                 usage=("nan,0.5", "-1,0.5", "0,0.5", "2,0.5", "inf,0.5", "abc", "0.25,", ""))
LIST_EOC = Opt("expert-of-class", "list", values=("-1,0", "99,0", "1.5,0", "abc", "0,1,1"),
               usage=("-1,0", "1.5,0", "abc"))


def fam_options(c):
    cases = []
    labels = os.path.join(c.cohort, "labels.csv")

    def gen(cmd, opts, argv_fn, outputs_fn=lambda cd: (), requires=(), pre=(), inputs=(),
            form="eq"):
        for o in opts:
            for v in values_of(o):
                j = judge(v, o)
                if j is None:
                    continue
                cid = "options/%s%s--%s=%s" % (cmd, "-" + "-".join(pre) if pre else "", o.name,
                                               v if v else "empty")
                cd = c.case_dir(cid)
                arg = ["--%s=%s" % (o.name, v)] if form == "eq" else ["--" + o.name, v]
                cases.append(Case(cid, argv_fn(cd) + list(pre) + arg,
                                  expect=(2,) if j == "usage" else (1, 2),
                                  needles=("--" + o.name,) if j == "usage" else
                                  ("--" + o.name,) + tuple(base(i) for i in inputs if i.endswith(".svs")),
                                  inputs=inputs, outputs=outputs_fn(cd), requires=requires))

    # bf16 is the cpu backend's: on a Vulkan device it is bad usage, refused before any work
    for cmd in ("bench-backbone", "extract"):
        cid = "options/%s--precision=bf16-vulkan" % cmd
        cd = c.case_dir(cid)
        argv = (M(c, "bench", "backbone", "--backbone", c.resnet, "--batch", "1", "--reps", "1",
                  "--tile", "16") if cmd == "bench-backbone" else
                M(c, "extract", "--backbone", c.bb, "--slide", c.slide, "--preset", "bwh_biopsy",
                  "-q", "--out", os.path.join(cd, "f.h5")))
        cases.append(Case(cid, argv + ["--precision", "bf16", "--device", "vulkan"], expect=(2,),
                          needles=("--precision",),
                          inputs=(c.resnet,) if cmd == "bench-backbone" else (c.slide, c.bb),
                          outputs=() if cmd == "bench-backbone" else ((os.path.join(cd, "f.h5"), "h5feat"),),
                          requires=() if cmd == "bench-backbone" else ("slides",)))

    # tiles, extract --slide, bench read: the grid options
    tiles_out = lambda cd: ((os.path.join(cd, "p.h5"), "h5patch"),)
    gen("tiles", GRID, lambda cd: M(c, "tiles", c.slide, "--preset", "bwh_biopsy", "-q", "--out",
                                    os.path.join(cd, "p.h5")),
        tiles_out, ("slides",), inputs=(c.slide,))
    feat_out = lambda cd: ((os.path.join(cd, "f.h5"), "h5feat"),)
    ex = lambda cd: M(c, "extract", "--backbone", c.bb, "--slide", c.slide, "--preset",
                      "bwh_biopsy", "--device", "cpu", "-q", "--out", os.path.join(cd, "f.h5"))
    gen("extract", GRID + [Opt("threads", "int", lo=0, hi=1024), Opt("batch", "int", lo=1, hi=4096),
                           PRECISION],
        ex, feat_out, ("slides",), inputs=(c.slide, c.bb))
    gen("bench-read", GRID +
        [Opt("max-tiles", "int", lo=1, values=("-1", "0", "1.5", "abc")),
         Opt("reps", "int", lo=1, values=("-1", "0", "1.5", "abc")),
         Opt("threads", "list", values=("0", "-1", "100000", "abc", "1.5", "1,,2", "", "1e9"),
             usage=("0", "-1", "100000", "abc", "1.5", "1,,2", "", "1e9"))],
        lambda cd: M(c, "bench", "read", c.slide, "--preset", "bwh_biopsy", "--max-tiles", "4",
                     "--reps", "1"), requires=("slides",), inputs=(c.slide,))
    # forward
    fw = lambda cd: M(c, "forward", "--model", c.model, "--features", c.bag, "--device", "cpu",
                      "--json")
    gen("forward", [Opt("seed", "int64", lo=0), STEPS, CHAINS, ETA], fw, inputs=(c.model, c.bag))
    gen("forward", [STEPS], fw, pre=("--sampler=ddim",), inputs=(c.model, c.bag))
    # classify
    cl_out = lambda cd: ((os.path.join(cd, "out"), "dir"),)
    cl = lambda cd: M(c, "classify", c.slide, "--backbone", c.bb, "--model", c.model, "--preset",
                      "bwh_biopsy", "--device", "cpu", "--chains", "2", "--heatmap-width", "64",
                      "-q", "--out", os.path.join(cd, "out"))
    gen("classify", [Opt("batch", "int", lo=1, hi=4096), GRIDD["mag"], GRIDD["mpp"],
                     GRIDD["level"], Opt("size", "int", lo=16, hi=16384),
                     Opt("threads", "int", lo=0, hi=1024), Opt("seed", "int64", lo=0), CHAINS,
                     STEPS, ETA, Opt("heatmap-width", "int", lo=16, hi=65535)],
        cl, cl_out, ("gst", "slides"), inputs=(c.slide, c.bb, c.model))
    gen("classify", [STEPS], cl, cl_out, ("gst", "slides"), pre=("--sampler=ddim",),
        inputs=(c.slide, c.bb, c.model))
    man = c.gp("misc", "manifest.csv")
    gen("classify", [Opt("shard", "list", values=("2/2", "-1/2", "0/0", "1/0", "a/b", "0/2junk",
                                                  "1e9/2", "0/-1", "0.5/2"),
                         usage=("2/2", "-1/2", "0/0", "1/0", "a/b", "0/2junk", "1e9/2", "0/-1",
                                "0.5/2"))],
        lambda cd: M(c, "classify", "--manifest", man, "--backbone", c.bb, "--model", c.model,
                     "--preset", "bwh_biopsy", "--device", "cpu", "--chains", "2",
                     "--heatmap-width", "64", "-q", "--out", os.path.join(cd, "out")),
        cl_out, ("gst", "slides"), inputs=(man,))
    # train, each stage
    tr_out = lambda cd: ((os.path.join(cd, "out"), "dir"),)

    def tr(stage, extra):
        return lambda cd: M(c, "train", stage, "--data", c.cohort, "--labels", labels, "--out",
                            os.path.join(cd, "out"), "--device", "cpu", "-q", "--epochs", "1",
                            *extra)
    gen("train-adapter", TRAIN_COMMON + TRAIN_ADAPTER, tr("adapter", TINY), tr_out,
        inputs=(c.cohort,))
    lr_epochs = TRAIN_COMMON
    gen("train-transmil", TRAIN_COMMON + TRAIN_ADAPTER, tr("transmil", TINY), tr_out,
        inputs=(c.cohort,))
    gen("train-moe", lr_epochs + [Opt("experts", "int", lo=2, hi=16), LIST_ALPHA, LIST_EOC],
        tr("moe", TINY + ["--adapter", c.adapter]), tr_out, inputs=(c.cohort, c.adapter))
    gen("train-diffusion", lr_epochs + [Opt("val-steps", "int", lo=1, soft=(1, 1000)),
                                        Opt("val-chains", "int", lo=1, hi=4096),
                                        Opt("diffusion-width", "int", lo=1, hi=65536)],
        tr("diffusion", ["--moe", c.moe]), tr_out, inputs=(c.cohort, c.moe))
    gen("train-abmil", lr_epochs + [Opt("abmil-width", "int", lo=1, hi=65536),
                                    Opt("abmil-attn", "int", lo=1, hi=65536)],
        tr("abmil", ["--abmil-width", "8", "--abmil-attn", "4"]), tr_out, inputs=(c.cohort,))
    # eval
    ev = lambda cd: M(c, "eval", "--model", c.model, "--data", c.cohort, "--labels", labels,
                      "--device", "cpu", "-q", "--chains", "2", "--out", os.path.join(cd, "p.csv"))
    ev_out = lambda cd: ((os.path.join(cd, "p.csv"), "csv:slide_id"),)
    gen("eval", [Opt("val-fraction", "double", lo=0, hi=0.999999), Opt("seed", "seed"), STEPS,
                 CHAINS, Opt("sample-seed", "int64", lo=0)], ev, ev_out, inputs=(c.cohort,))
    gen("eval", [STEPS], ev, ev_out, pre=("--sampler=ddim",), inputs=(c.cohort,))
    # synth-bags
    sb = lambda cd: M(c, "synth-bags", "--out", os.path.join(cd, "out"), "--classes", "2",
                      "--slides", "8", "--dim", "8", "--min-instances", "10", "--max-instances",
                      "20", "--min-fraction", "0.1", "--max-fraction", "0.3", "--seed", "1", "-q")
    gen("synth-bags", [Opt("classes", "int", lo=2, hi=3, extra=("1", "4")),
                       Opt("slides", "int", lo=2, hi=1000000, values=("-1", "0", "1", "1.5", "abc", "2147483648")),
                       Opt("test-fraction", "double", lo=0, hi=0.999999),
                       Opt("dim", "int", lo=2, hi=65536),
                       Opt("min-instances", "int", lo=1, hi=20),
                       Opt("max-instances", "int", lo=10, hi=1000000),
                       Opt("min-fraction", "double", lo=0, lo_open=True, hi=0.3),
                       Opt("max-fraction", "double", lo=0.1, hi=1),
                       Opt("lesion-distance", "double", lo=0, lo_open=True, hi=12),
                       Opt("noise", "double", lo=0, hi=999999),
                       Opt("class-ratio", "list", values=("0:1", "1", "a:b", "1:2:3", "1001:1", "2:-1", ""),
                           usage=("0:1", "1", "a:b", "1:2:3", "1001:1", "2:-1", "")),
                       Opt("preset", "list", values=("nope", "", "bracs-like"),
                           usage=("nope", "", "bracs-like")),
                       Opt("seed", "seed")], sb, lambda cd: ((os.path.join(cd, "out"), "dir"),))
    # bench
    gen("bench-gemm", [Opt("reps", "list", values=("-1", "0", "abc", "1.5", "1e9", ""),
                           usage=("-1", "0", "abc", "1.5", "1e9", ""))],
        lambda cd: M(c, "bench", "gemm", "8", "8", "8", "--device", "cpu"), form="space")
    for k, v in enumerate(["-1", "0", "1e9", "1.5", "abc", "nan", "1048577", ""]):
        cid = "options/bench-gemm-M=%s" % (v or "empty")
        cases.append(Case(cid, M(c, "bench", "gemm", v, "8", "8", "--device", "cpu"), expect=(2,),
                          needles=(v or "M N K", "M N K") if v else ("M N K",)))
    gen("bench-mexd", [Opt("n", "int64", lo=1, values=("-1", "0", "1.5", "abc", "1e9")),
                       Opt("chains", "int", lo=1, hi=4096), STEPS,
                       Opt("reps", "int", lo=1, values=("-1", "0", "1.5", "abc")),
                       Opt("warmup", "int", lo=0, values=("-1", "1.5", "abc"))],
        lambda cd: M(c, "bench", "mexd", "--model", c.model, "--n", "8", "--reps", "1",
                     "--warmup", "0", "--chains", "2", "--device", "cpu"), inputs=(c.model,))
    gen("bench-mexd", [Opt("experts", "int64", lo=2, hi=16, values=("-1", "0", "1", "17", "100000", "abc")),
                       Opt("dim", "int64", lo=1, values=("-1", "0", "1.5", "abc"))],
        lambda cd: M(c, "bench", "mexd", "--n", "8", "--reps", "1", "--warmup", "0", "--chains",
                     "1", "--device", "cpu"))
    gen("bench-backbone", [Opt("batch", "int", lo=1, hi=4096), Opt("reps", "int", lo=1, values=("-1", "0", "1.5", "abc")),
                           Opt("tile", "int", lo=1, hi=16384), PRECISION],
        lambda cd: M(c, "bench", "backbone", "--backbone", c.resnet, "--batch", "1", "--reps", "1",
                     "--tile", "16", "--device", "cpu"), inputs=(c.resnet,))
    gen("bench-train", [Opt("bags", "int", lo=1, values=("-1", "0", "1.5", "abc")),
                        Opt("n", "int", lo=1, values=("-1", "0", "1.5", "abc", "2147483648")),
                        Opt("dim", "int", lo=1, hi=1 << 20),
                        Opt("steps", "int", lo=1, values=("-1", "0", "1.5", "abc")),
                        Opt("warmup", "int", lo=0, values=("-1", "1.5", "abc")),
                        Opt("width", "int", lo=1, hi=65536), Opt("heads", "int", lo=1, hi=1024),
                        Opt("landmarks", "int", lo=1, hi=16384), Opt("seed", "int64", lo=0)],
        lambda cd: M(c, "bench", "train", "--n", "8", "--dim", "8", "--width", "16", "--heads",
                     "2", "--landmarks", "8", "--bags", "1", "--steps", "1", "--warmup", "0",
                     "--device", "cpu"))
    gen("demo", [Opt("train-slides", "int", lo=6, hi=198, values=("-1", "0", "5", "100000", "1.5", "abc")),
                 Opt("test-slides", "int", lo=2, hi=194, values=("-1", "0", "1", "100000", "abc")),
                 Opt("seed", "int64", lo=0, values=("-1", "abc"))],
        lambda cd: M(c, "demo", "--out", os.path.join(cd, "out"), "--device", "cpu", "-q"),
        lambda cd: ((os.path.join(cd, "out"), "dir"),), ("gst", "slides"))
    return cases


# ---- outputs ---------------------------------------------------------------------------------------


def fam_outputs(c):
    cases = []
    labels = os.path.join(c.cohort, "labels.csv")

    def writer_cmds(cd):
        """(name, argv builder taking the output path, private inputs {name: source}, the input
        the output aliases, output kind) of every command that writes, with private copies of
        their inputs in the case directory."""
        s = os.path.join(cd, "in", "slide.svs")
        b = os.path.join(cd, "in", "bb.safetensors")
        m = os.path.join(cd, "in", "model.safetensors")
        t = os.path.join(cd, "in", "tiles")
        d = os.path.join(cd, "in", "data")
        ad = os.path.join(cd, "in", "adapter")
        return s, b, m, t, d, ad

    def add(name, target_key, build, kinds, out_kind, requires=(), no_input=False):
        """target_key: which private input the output aliases."""
        for spelling in ("same", "symlink", "hardlink", "dotdot"):
            cid = "outputs/%s-%s" % (name, spelling)
            cd = c.case_dir(cid)
            s, b, m, t, d, ad = writer_cmds(cd)
            prep = [("copy", c.slide, s), ("copy", c.bb, b), ("copy", c.model, m),
                    ("copytree", c.tiles, t), ("copytree", c.cohort, d),
                    ("copytree", os.path.dirname(c.adapter), ad), ("mkdir", os.path.join(cd, "x"), "")]
            target = {"slide": s, "bb": b, "model": m, "tile": os.path.join(t, "t0_0_0.png"),
                      "labels": os.path.join(d, "labels.csv"),
                      "bag": os.path.join(d, "good_0.h5"), "data": d, "adapter": ad,
                      "tiles": t}[target_key]
            if spelling == "same":
                out = target
            elif spelling == "symlink":
                out = os.path.join(cd, "via-symlink" + os.path.splitext(target)[1])
                prep.append(("symlink", target, out))
            elif spelling == "hardlink":
                if target_key in ("data", "adapter", "tiles"):
                    continue
                out = os.path.join(cd, "via-hardlink" + os.path.splitext(target)[1])
                prep.append(("hardlink", target, out))
            else:
                out = os.path.join(cd, "x", "..", os.path.relpath(target, cd))
            argv = build(out, s, b, m, t, d, ad)
            inputs = (os.path.join(cd, "in"),)
            # both paths named; a command without inputs (synth-bags, demo) names its output
            names = (base(out),) if no_input or base(out) == base(target) else \
                (base(out), base(target))
            cases.append(Case(cid, argv, needles_all=names, inputs=inputs, prep=tuple(prep),
                              requires=requires))

    add("tiles-out-slide", "slide", lambda o, s, b, m, t, d, ad: M(
        c, "tiles", s, "--preset", "bwh_biopsy", "-q", "--out", o), (), "h5patch", ("slides",))
    add("tiles-geojson-slide", "slide", lambda o, s, b, m, t, d, ad: M(
        c, "tiles", s, "--preset", "bwh_biopsy", "-q", "--geojson", o), (), "geojson", ("slides",))
    add("extract-out-backbone", "bb", lambda o, s, b, m, t, d, ad: M(
        c, "extract", "--backbone", b, "--tiles", t, "--device", "cpu", "-q", "--out", o), (), "h5feat")
    add("extract-out-tile", "tile", lambda o, s, b, m, t, d, ad: M(
        c, "extract", "--backbone", b, "--tiles", t, "--device", "cpu", "-q", "--out", o), (), "h5feat")
    add("extract-out-slide", "slide", lambda o, s, b, m, t, d, ad: M(
        c, "extract", "--backbone", b, "--slide", s, "--preset", "bwh_biopsy", "--device", "cpu",
        "-q", "--out", o), (), "h5feat", ("slides",))
    add("eval-out-labels", "labels", lambda o, s, b, m, t, d, ad: M(
        c, "eval", "--model", m, "--data", d, "--labels", os.path.join(d, "labels.csv"),
        "--device", "cpu", "-q", "--chains", "2", "--out", o), (), "csv")
    add("eval-out-model", "model", lambda o, s, b, m, t, d, ad: M(
        c, "eval", "--model", m, "--data", d, "--labels", os.path.join(d, "labels.csv"),
        "--device", "cpu", "-q", "--chains", "2", "--out", o), (), "csv")
    add("eval-out-bag", "bag", lambda o, s, b, m, t, d, ad: M(
        c, "eval", "--model", m, "--data", d, "--labels", os.path.join(d, "labels.csv"),
        "--device", "cpu", "-q", "--chains", "2", "--out", o), (), "csv")
    for tk in ("model", "labels", "bag"):
        add("eval-reliability-" + tk, tk, lambda o, s, b, m, t, d, ad: M(
            c, "eval", "--model", m, "--data", d, "--labels", os.path.join(d, "labels.csv"),
            "--device", "cpu", "-q", "--chains", "2", "--reliability", o), (), "png")
    add("train-out-data", "data", lambda o, s, b, m, t, d, ad: M(
        c, "train", "adapter", "--data", d, "--labels", os.path.join(d, "labels.csv"),
        "--device", "cpu", "-q", "--epochs", "1", *TINY, "--out", o), (), "dir")
    add("train-moe-out-adapter-dir", "adapter", lambda o, s, b, m, t, d, ad: M(
        c, "train", "moe", "--data", d, "--labels", os.path.join(d, "labels.csv"), "--adapter",
        os.path.join(ad, "model.safetensors"), "--device", "cpu", "-q", "--epochs", "1", *TINY,
        "--out", o), (), "dir")
    add("train-out-labels", "labels", lambda o, s, b, m, t, d, ad: M(
        c, "train", "adapter", "--data", d, "--labels", os.path.join(d, "labels.csv"),
        "--device", "cpu", "-q", "--epochs", "1", *TINY, "--out", o), (), "dir")
    add("classify-out-slide", "slide", lambda o, s, b, m, t, d, ad: M(
        c, "classify", s, "--backbone", b, "--model", m, "--preset", "bwh_biopsy", "--device",
        "cpu", "--chains", "2", "--heatmap-width", "64", "-q", "--out", o), (), "dir",
        ("gst", "slides"))
    add("classify-out-model", "model", lambda o, s, b, m, t, d, ad: M(
        c, "classify", s, "--backbone", b, "--model", m, "--preset", "bwh_biopsy", "--device",
        "cpu", "--chains", "2", "--heatmap-width", "64", "-q", "--out", o), (), "dir",
        ("gst", "slides"))
    add("synth-bags-out-model", "model", lambda o, s, b, m, t, d, ad: M(
        c, "synth-bags", "--out", o, "--slides", "4", "--dim", "4", "--min-instances", "5",
        "--max-instances", "8", "-q"), (), "dir", no_input=True)
    add("synth-bags-out-data", "data", lambda o, s, b, m, t, d, ad: M(
        c, "synth-bags", "--out", o, "--slides", "4", "--dim", "4", "--min-instances", "5",
        "--max-instances", "8", "-q", "--force"), (), "dir", no_input=True)
    add("demo-out-model", "model", lambda o, s, b, m, t, d, ad: M(
        c, "demo", "--out", o, "--device", "cpu", "-q"), (), "dir", ("gst", "slides"), no_input=True)
    # classify: the slides' own directory, and a slide without extension whose result directory
    # would be the slide itself
    # decision: classifying into the slides' own folder is allowed (each slide's outputs go to
    # a folder of its own beside it); the slide must come through untouched and the results be
    # complete
    cid = "outputs/classify-out-slides-dir"
    cd = c.case_dir(cid)
    s = os.path.join(cd, "in", "slide.svs")
    cases.append(Case(cid, M(c, "classify", s, "--backbone", c.bb, "--model", c.model, "--preset",
                             "bwh_biopsy", "--device", "cpu", "--chains", "2", "--heatmap-width",
                             "64", "-q", "--out", os.path.join(cd, "in")),
                      expect=(0,), inputs=(s,), prep=(("copy", c.slide, s),),
                      required=((os.path.join(cd, "in", "slide", "result.json"), "json"),
                                (os.path.join(cd, "in", "summary.csv"), "csv")),
                      requires=("gst", "slides")))
    cid = "outputs/classify-slide-no-extension-in-out"
    cd = c.case_dir(cid)
    s = os.path.join(cd, "out", "slide")
    cases.append(Case(cid, M(c, "classify", s, "--backbone", c.bb, "--model", c.model, "--preset",
                             "bwh_biopsy", "--device", "cpu", "--chains", "2", "--heatmap-width",
                             "64", "-q", "--out", os.path.join(cd, "out")),
                      needles=("slide",), inputs=(s,), prep=(("copy", c.slide, s),),
                      requires=("gst", "slides")))
    # two outputs of one command on one path
    cid = "outputs/tiles-out-equals-geojson"
    o = os.path.join(c.case_dir(cid), "x.h5")
    cases.append(Case(cid, M(c, "tiles", c.slide, "--preset", "bwh_biopsy", "-q", "--out", o,
                             "--geojson", o), expect=(1, 2), needles=("x.h5",),
                      inputs=(c.slide,), requires=("slides",)))
    # where an output cannot go
    writers = [
        ("tiles", lambda o: M(c, "tiles", c.slide, "--preset", "bwh_biopsy", "-q", "--out", o),
         (c.slide,), ("slides",), "p.h5", False),
        ("tiles-geojson", lambda o: M(c, "tiles", c.slide, "--preset", "bwh_biopsy", "-q",
                                      "--geojson", o), (c.slide,), ("slides",), "t.geojson", False),
        ("extract", lambda o: M(c, "extract", "--backbone", c.bb, "--tiles", c.tiles, "--device",
                                "cpu", "-q", "--out", o), (c.bb, c.tiles), (), "f.h5", False),
        ("eval", lambda o: M(c, "eval", "--model", c.model, "--data", c.cohort, "--labels", labels,
                             "--device", "cpu", "-q", "--chains", "2", "--out", o),
         (c.model, c.cohort), (), "p.csv", False),
        ("eval-reliability", lambda o: M(c, "eval", "--model", c.model, "--data", c.cohort,
                                         "--labels", labels, "--device", "cpu", "-q", "--chains",
                                         "2", "--reliability", o),
         (c.model, c.cohort), (), "r.png", False),
        ("train", lambda o: M(c, "train", "adapter", "--data", c.cohort, "--labels", labels,
                              "--device", "cpu", "-q", "--epochs", "1", *TINY, "--out", o),
         (c.cohort,), (), "run", True),
        ("classify", lambda o: M(c, "classify", c.slide, "--backbone", c.bb, "--model", c.model,
                                 "--preset", "bwh_biopsy", "--device", "cpu", "--chains", "2",
                                 "--heatmap-width", "64", "-q", "--out", o),
         (c.slide, c.bb, c.model), ("gst", "slides"), "res", True),
        ("synth-bags", lambda o: M(c, "synth-bags", "--out", o, "--slides", "4", "--dim", "4",
                                   "--min-instances", "5", "--max-instances", "8", "-q"),
         (), (), "sb", True),
    ]
    for name, build, inputs, req, leaf, is_dir in writers:
        places = [("under-file", "file"), ("in-proc", "proc")]
        if not is_dir:
            places += [("nonexistent-dir", "nodir"), ("existing-dir", "isdir")]
        for pname, how in places:
            cid = "outputs/%s-%s" % (name, pname)
            cd = c.case_dir(cid)
            prep = []
            if how == "file":
                f = os.path.join(cd, "afile")
                prep.append(("write", f, "not a directory\n"))
                o = os.path.join(f, leaf)
            elif how == "proc":
                o = os.path.join("/proc", "mexd-bad-input-" + leaf)
            elif how == "nodir":
                o = os.path.join(cd, "no", "such", "dir", leaf)
            else:
                o = os.path.join(cd, leaf)
                prep.append(("mkdir", o, ""))
            cases.append(Case(cid, build(o), needles=(leaf,), inputs=inputs, prep=tuple(prep),
                              requires=req))
    # a control: writing next to nothing special works
    cid = "outputs/extract-fresh-file"
    o = os.path.join(c.case_dir(cid), "f.h5")
    cases.append(Case(cid, M(c, "extract", "--backbone", c.bb, "--tiles", c.tiles, "--device", "cpu",
                             "-q", "--out", o), expect=(0,), inputs=(c.bb, c.tiles),
                      required=((o, "h5feat"),)))
    return cases


# ---- special files -----------------------------------------------------------------------------------


def fam_special(c):
    cases = []
    labels = os.path.join(c.cohort, "labels.csv")
    for kind in SPECIAL_KINDS:
        sp = lambda ext: special_path(c, kind, ext)
        nd = lambda ext: (special_needle(c, kind, ext),)
        k = kind

        def add(slot, argv, needles, inputs=(), outputs=(), requires=()):
            cases.append(Case("special/%s-%s" % (slot, k), argv, needles=needles, inputs=inputs,
                              outputs=outputs, requires=requires))
        add("forward-model", M(c, "forward", "--model", sp("safetensors"), "--features", c.bag,
                               "--device", "cpu"), nd("safetensors"), (c.bag,))
        add("forward-features", M(c, "forward", "--model", c.model, "--features", sp("h5"),
                                  "--device", "cpu"), nd("h5"), (c.model,))
        out = os.path.join(c.case_dir("special/extract-backbone-" + k), "f.h5")
        add("extract-backbone", M(c, "extract", "--backbone", sp("safetensors"), "--tiles",
                                  c.tiles, "--device", "cpu", "-q", "--out", out),
            nd("safetensors"), (c.tiles,), ((out, "h5feat"),))
        out = os.path.join(c.case_dir("special/tiles-slide-" + k), "p.h5")
        add("tiles-slide", M(c, "tiles", sp("svs"), "-q", "--out", out), nd("svs"), (),
            ((out, "h5patch"),))
        out = os.path.join(c.case_dir("special/classify-slide-" + k), "out")
        add("classify-slide", M(c, "classify", sp("svs"), "--backbone", c.bb, "--model", c.model,
                                "--device", "cpu", "-q", "--out", out), nd("svs"),
            (c.bb, c.model), ((out, "dir"),), ("gst",))
        add("eval-labels", M(c, "eval", "--model", c.model, "--data", c.cohort, "--labels",
                             sp("csv"), "--device", "cpu", "-q"), nd("csv"), (c.model, c.cohort))
        out = os.path.join(c.case_dir("special/classify-manifest-" + k), "out")
        add("classify-manifest", M(c, "classify", "--manifest", sp("csv"), "--backbone", c.bb,
                                   "--model", c.model, "--device", "cpu", "-q", "--out", out),
            nd("csv"), (c.bb, c.model), ((out, "dir"),), ("gst",))
        d = c.gp("cohorts", "special-" + k)
        add("eval-data-entry", M(c, "eval", "--model", c.model, "--data", d, "--labels",
                                 os.path.join(d, "labels.csv"), "--device", "cpu", "-q"),
            ("x_special.h5",), (c.model, d))
        td = c.gp("special", "tiles-" + k)
        out = os.path.join(c.case_dir("special/extract-tiles-entry-" + k), "f.h5")
        add("extract-tiles-entry", M(c, "extract", "--backbone", c.bb, "--tiles", td, "--device",
                                     "cpu", "-q", "--out", out), ("t9_216_0.png",), (c.bb, td),
            ((out, "h5feat"),))
        if kind in ("fifo", "devzero"):
            out = os.path.join(c.case_dir("special/train-labels-" + k), "out")
            add("train-labels", M(c, "train", "adapter", "--data", c.cohort, "--labels", sp("csv"),
                                  "--out", out, "--device", "cpu", "-q", "--epochs", "1", *TINY),
                nd("csv"), (c.cohort,), ((out, "dir"),))
            out = os.path.join(c.case_dir("special/extract-slide-" + k), "f.h5")
            add("extract-slide", M(c, "extract", "--backbone", c.bb, "--slide", sp("svs"),
                                   "--device", "cpu", "-q", "--out", out), nd("svs"), (c.bb,),
                ((out, "h5feat"),))
            add("bench-read", M(c, "bench", "read", sp("svs"), "--max-tiles", "4", "--reps", "1"),
                nd("svs"))
            add("eval-model", M(c, "eval", "--model", sp("safetensors"), "--data", c.cohort,
                                "--labels", labels, "--device", "cpu", "-q"), nd("safetensors"),
                (c.cohort,))
            add("classify-model", M(c, "classify", c.slide, "--backbone", c.bb, "--model",
                                    sp("safetensors"), "--device", "cpu", "-q", "--out",
                                    os.path.join(c.case_dir("special/classify-model-" + k), "out")),
                nd("safetensors"), (c.bb, c.slide), (), ("gst", "slides"))
            out = os.path.join(c.case_dir("special/train-moe-adapter-" + k), "out")
            add("train-moe-adapter", M(c, "train", "moe", "--data", c.cohort, "--labels", labels,
                                       "--adapter", sp("safetensors"), "--out", out, "--device",
                                       "cpu", "-q", "--epochs", "1", *TINY), nd("safetensors"),
                (c.cohort,), ((out, "dir"),))
            add("bench-backbone", M(c, "bench", "backbone", "--backbone", sp("safetensors"),
                                    "--batch", "1", "--reps", "1", "--tile", "16", "--device",
                                    "cpu"), nd("safetensors"))
        if kind in ("fifo", "devnull", "dir"):
            src = sp("h5") if kind != "devnull" else "/dev/null"
            add("eval-data-itself", M(c, "eval", "--model", c.model, "--data", src, "--labels",
                                      labels, "--device", "cpu", "-q"),
                (src if kind == "devnull" else base(src),), (c.model,))
    return cases


# ---- interruptions ---------------------------------------------------------------------------------


def fam_interrupt(c):
    cases = []
    labels = os.path.join(c.cohort, "labels.csv")

    def add(name, argv_fn, outs_fn, plan, requires=(), inputs=(), env=(), check=""):
        for sig, delay in plan:
            cid = "interrupt/%s-%s-%s" % (name, sig.lower(), ("%g" % delay).replace(".", "p"))
            cd = c.case_dir(cid)
            out = os.path.join(cd, "out")
            cases.append(Case(cid, argv_fn(out), expect=(0,), inputs=inputs,
                              required=outs_fn(out), clean_dirs=(out,), prep=(("mkdir", out, ""),),
                              interrupt=(sig, delay), requires=requires, env=env, check=check,
                              timeout=0))
    add("extract-slide", lambda o: M(c, "extract", "--backbone", c.bb, "--slide", c.slide,
                                     "--preset", "bwh_biopsy", "--size", "16", "--device", "cpu",
                                     "-q", "--out", os.path.join(o, "f.h5")),
        lambda o: ((os.path.join(o, "f.h5"), "h5feat"),),
        [("KILL", 0.1), ("KILL", 0.4), ("TERM", 0.2), ("INT", 0.3)], ("slides",),
        (c.slide, c.bb))
    add("tiles", lambda o: M(c, "tiles", c.slide, "--preset", "bwh_biopsy", "--size", "8", "-q",
                             "--out", os.path.join(o, "p.h5"), "--geojson",
                             os.path.join(o, "t.geojson")),
        lambda o: ((os.path.join(o, "p.h5"), "h5patch"), (os.path.join(o, "t.geojson"), "geojson")),
        [("KILL", 0.02), ("KILL", 0.06), ("TERM", 0.04)], ("slides",), (c.slide,))
    cl = lambda o: M(c, "classify", c.slide, c.slide2, "--backbone", c.bb, "--model", c.model,
                     "--preset", "bwh_biopsy", "--size", "32", "--device", "cpu", "--chains", "4",
                     "--heatmap-width", "64", "-q", "--out", o)
    cl_outs = lambda o: tuple((os.path.join(o, s, f), k) for s in ("good", "good2")
                              for f, k in (("result.json", "json"), ("features.h5", "h5feat"),
                                           ("heatmap.png", "png"), ("tiles.geojson", "geojson"))) + \
        ((os.path.join(o, "summary.csv"), "csv:slide_id"),)
    add("classify", cl, cl_outs, [("KILL", 0.3), ("KILL", 0.8), ("TERM", 0.5), ("INT", 0.5)],
        ("gst", "slides"), (c.slide, c.slide2, c.bb, c.model))
    add("classify-kill-after-1", cl, cl_outs, [("NONE", 0)], ("gst", "slides"),
        (c.slide, c.slide2, c.bb, c.model), env=(("MEXD_CLASSIFY_KILL_AFTER", "1"),))
    add("train-adapter", lambda o: M(c, "train", "adapter", "--data", c.cohort, "--labels", labels,
                                     "--out", o, "--device", "cpu", "-q", "--epochs", "300",
                                     "--resume", *TINY),
        lambda o: ((os.path.join(o, "model.safetensors"), "safetensors"),
                   (os.path.join(o, "checkpoint.safetensors"), "safetensors"),
                   (os.path.join(o, "log.jsonl"), "jsonl")),
        [("KILL", 0.2), ("KILL", 0.6), ("TERM", 0.4), ("INT", 0.4)], (), (c.cohort,),
        check="log_300")
    add("synth-bags", lambda o: M(c, "synth-bags", "--out", o, "--slides", "100", "--dim", "32",
                                  "--seed", "2", "--force", "-q"),
        lambda o: ((os.path.join(o, "labels.csv"), "csv:slide_id"),
                   (os.path.join(o, "synth.json"), "json")),
        [("KILL", 0.1), ("KILL", 0.3), ("TERM", 0.2)], (), (), check="synth_100")
    return cases


# ---- gst-launch-1.0 ---------------------------------------------------------------------------------


def fam_gst(c):
    cases = []
    G = ["gst-launch-1.0"]

    def slide_pipe(loc, bb=None, model=None, extra_src=()):
        return (G + ["openslidesrc", "location=%s" % loc, "preset=bwh_biopsy", *extra_src, "!",
                     "mexdembed", "model=%s" % (bb or c.bb), "device=cpu", "!", "mexdmoe",
                     "model=%s" % (model or c.model), "device=cpu", "!", "mexddiffc",
                     "model=%s" % (model or c.model), "device=cpu", "chains=2", "!", "fakesink"])

    def feat_pipe(loc, model=None, diffc_model=None):
        return G + ["mexdfeaturesrc", "location=%s" % loc, "!", "mexdmoe",
                    "model=%s" % (model or c.model), "device=cpu", "!", "mexddiffc",
                    "model=%s" % (diffc_model or model or c.model), "device=cpu", "chains=2", "!",
                    "fakesink"]

    def add(name, argv, needles, inputs=(), requires=("gst-launch",)):
        cases.append(Case("gst/" + name, argv, expect=("nonzero",), needles=needles,
                          inputs=inputs, requires=requires, merged_output=True))
    missing = os.path.join(c.gen, "missing.svs")
    for i in range(1, 6):
        add("openslidesrc-missing-%d" % i, slide_pipe(missing), ("missing.svs",))
    add("openslidesrc-fifo", slide_pipe(special_path(c, "fifo", "svs")), ("fifo.svs",))
    for n in SLIDE_BAD:
        p = c.gp("slides", "bad", n)
        add("openslidesrc-" + n, slide_pipe(p), (n,), (p,), ("gst-launch", "slides"))
    add("openslidesrc-second-missing", slide_pipe("%s;%s" % (c.slide, missing)), ("missing.svs",),
        (c.slide,), ("gst-launch", "slides"))
    add("openslidesrc-empty-location", slide_pipe(""), ("location",))
    fp = lambda n, e: c.gp("features", "%s.%s" % (n, e))
    add("mexdfeaturesrc-missing", feat_pipe(os.path.join(c.gen, "missing.h5")), ("missing.h5",))
    add("mexdfeaturesrc-fifo", feat_pipe(special_path(c, "fifo", "h5")), ("fifo.h5",))
    add("mexdfeaturesrc-devzero", feat_pipe("/dev/zero"), ("/dev/zero",))
    for n, e in (("h5-corrupt-middle", "h5"), ("npy-nan", "npy"), ("csv-ragged", "csv"),
                 ("npy-huge-shape", "npy")):
        add("mexdfeaturesrc-" + n, feat_pipe(fp(n, e)), ("%s.%s" % (n, e),), (fp(n, e),))
    # a bag of the wrong D: caps not negotiated; gst-launch-1.0 hung in 2 of 12 runs (2026-12-03)
    for i in range(1, 6):
        add("mexdfeaturesrc-h5-wrong-dim-%d" % i, feat_pipe(fp("h5-wrong-dim", "h5")),
            ("h5-wrong-dim.h5",), (fp("h5-wrong-dim", "h5"),))
    bp = lambda n: c.gp("backbone", n + ".safetensors")
    mp = lambda n: c.gp("model", n + ".safetensors")
    for n in ("empty", "nan-weights", "config-std-zero"):
        add("mexdembed-" + n, slide_pipe(c.slide, bb=bp(n)), (n + ".safetensors",), (bp(n),),
            ("gst-launch", "slides"))
    add("mexdembed-model-file", slide_pipe(c.slide, bb=c.model), (base(c.model),), (c.model,),
        ("gst-launch", "slides"))
    add("mexdembed-missing", slide_pipe(c.slide, bb=os.path.join(c.gen, "missing.safetensors")),
        ("missing.safetensors",), (), ("gst-launch", "slides"))
    good_h5 = fp("good", "h5")
    for n in ("trunc-half", "config-nested-100000", "nan-weights"):
        add("mexdmoe-" + n, feat_pipe(good_h5, model=mp(n), diffc_model=c.model),
            (n + ".safetensors",), (mp(n), good_h5))
    add("mexdmoe-backbone-file", feat_pipe(good_h5, model=c.bb, diffc_model=c.model),
        (base(c.bb),), (c.bb, good_h5))
    add("mexdmoe-missing", feat_pipe(good_h5, model=os.path.join(c.gen, "missing.safetensors"),
                                     diffc_model=c.model), ("missing.safetensors",), (good_h5,))
    for n in ("config-no-diffusion-tensors-kept", "trunc-last-1", "config-T-1e9"):
        add("mexddiffc-" + n, feat_pipe(good_h5, model=c.model, diffc_model=mp(n)),
            (n + ".safetensors",), (mp(n), good_h5))
    # out-of-range properties: gst-launch-1.0 itself must refuse the pipeline
    for elem, prop, val in (("openslidesrc", "tile-size", "0"), ("openslidesrc", "tile-size", "100000"),
                            ("openslidesrc", "level", "99"), ("openslidesrc", "magnification", "-1"),
                            ("openslidesrc", "threads", "100000"), ("mexdembed", "batch-size", "0"),
                            ("mexddiffc", "steps", "0"), ("mexddiffc", "chains", "0"),
                            ("mexddiffc", "eta", "2"), ("mexdheatmap", "width", "0")):
        # (the base pipeline's own value of the property, chains=2, would override the bad one)
        argv = [a for a in slide_pipe(c.slide) if not a.startswith(prop + "=")]
        if elem == "mexdheatmap":
            argv = argv[:-1] + ["mexdheatmap", "%s=%s" % (prop, val), "!", "fakesink"]
        else:
            i = argv.index(elem)
            argv = argv[:i + 1] + ["%s=%s" % (prop, val)] + argv[i + 1:]
        add("property-%s-%s=%s" % (elem, prop, val), argv, (prop,), (c.slide,),
            ("gst-launch", "slides"))
    # elements in the wrong order
    wrong = {
        "video-into-mexdmoe": G + ["openslidesrc", "location=" + c.slide, "preset=bwh_biopsy", "!",
                                   "mexdmoe", "model=" + c.model, "device=cpu", "!", "fakesink"],
        "features-into-mexdembed": G + ["mexdfeaturesrc", "location=" + good_h5, "!", "mexdembed",
                                        "model=" + c.bb, "device=cpu", "!", "fakesink"],
        "diffc-before-moe": G + ["mexdfeaturesrc", "location=" + good_h5, "!", "mexddiffc",
                                 "model=" + c.model, "device=cpu", "!", "mexdmoe",
                                 "model=" + c.model, "device=cpu", "!", "fakesink"],
        "video-into-mexddiffc": G + ["openslidesrc", "location=" + c.slide, "preset=bwh_biopsy",
                                     "!", "mexddiffc", "model=" + c.model, "device=cpu", "!",
                                     "fakesink"],
    }
    # Not here: features into mexdheatmap (no routing meta).  That error can only be found in the
    # streaming thread, after preroll began, and gst-launch-1.0 1.22 itself then sometimes waits
    # forever (stock elements too: fakesrc ! wavparse on junk hangs 3 of 30 runs); test-gst runs
    # that pipeline in-process (/gst/bad-input/wrong-order) and asserts the STREAM error.
    for name, argv in wrong.items():  # three runs each: a not-negotiated pipeline may hang
        for i in range(1, 4):
            add("wrong-order-%s-%d" % (name, i), argv,
                ("mexdmoe", "mexdembed", "mexddiffc", "mexdheatmap", "not-negotiated",
                 "not negotiated", "link"), (),
                ("gst-launch", "slides") if "location=" + c.slide in argv else ("gst-launch",))
    # the feature sink writing over an input
    for what in ("slide", "backbone"):
        cid = "gst/featuresink-over-" + what
        cd = c.case_dir(cid)
        s, b = os.path.join(cd, "slide.svs"), os.path.join(cd, "bb.safetensors")
        loc = s if what == "slide" else b
        argv = G + ["openslidesrc", "location=" + s, "preset=bwh_biopsy", "!", "mexdembed",
                    "model=" + b, "device=cpu", "!", "mexdfeaturesink", "location=" + loc]
        cases.append(Case(cid, argv, expect=("nonzero",), needles=(base(loc),), inputs=(s, b),
                          prep=(("copy", c.slide, s), ("copy", c.bb, b)),
                          requires=("gst-launch", "slides"), merged_output=True))
    return cases


# ---- memory ---------------------------------------------------------------------------------------


def fam_memory(c):
    cases = []
    R = ("noasan",)

    def add(name, argv, needles, inputs=(), outputs=(), requires=(), expect=(1,)):
        cases.append(Case("memory/" + name, argv, expect=expect,
                          needles=tuple(needles) + ("memory", "too large"), inputs=inputs,
                          outputs=outputs, requires=R + tuple(requires), rlimit_as=MEMORY_LIMIT))
    fp = lambda n, e: c.gp("features", "%s.%s" % (n, e))
    add("forward-npy-huge-shape", M(c, "forward", "--model", c.model, "--features",
                                    fp("npy-huge-shape", "npy"), "--device", "cpu"),
        ("npy-huge-shape.npy",), (c.model,))
    add("forward-h5-huge-dims", M(c, "forward", "--model", c.model, "--features",
                                  fp("h5-huge-dims-sparse", "h5"), "--device", "cpu"),
        ("h5-huge-dims-sparse.h5",), (c.model,))
    big = c.gp("misc", "h5-big-sparse.h5")
    add("forward-h5-2.4GB-sparse", M(c, "forward", "--model", c.model, "--features", big,
                                     "--device", "cpu"), ("h5-big-sparse.h5",), (c.model, big))
    d = c.gp("cohorts", "mem-big-sparse")
    add("eval-h5-2.4GB-sparse", M(c, "eval", "--model", c.model, "--data", d, "--labels",
                                  os.path.join(d, "labels.csv"), "--device", "cpu", "-q"),
        ("x_h5-big-sparse.h5",), (d,))
    mp = lambda n: c.gp("model", n + ".safetensors")
    add("forward-tensor-2^40-bytes", M(c, "forward", "--model", mp("shape-huge-2^40-bytes"),
                                       "--features", c.bag, "--device", "cpu"),
        ("shape-huge-2^40-bytes.safetensors",))
    add("forward-landmarks-1e8", M(c, "forward", "--model", mp("landmarks-1e8"), "--features",
                                   c.bag, "--device", "cpu"), ("landmarks-1e8.safetensors",))
    for cmd in ("classify", "extract", "tiles", "bench-read"):
        cd = c.case_dir("memory/%s-mag-0.01" % cmd)
        if cmd == "classify":
            argv = M(c, "classify", c.slide, "--backbone", c.bb, "--model", c.model, "--preset",
                     "bwh_biopsy", "--device", "cpu", "--chains", "2", "-q", "--out",
                     os.path.join(cd, "out"), "--mag", "0.01")
            req = ("gst", "slides")
        elif cmd == "extract":
            argv = M(c, "extract", "--backbone", c.bb, "--slide", c.slide, "--preset", "bwh_biopsy",
                     "--device", "cpu", "-q", "--out", os.path.join(cd, "f.h5"), "--mag", "0.01")
            req = ("slides",)
        elif cmd == "tiles":
            argv = M(c, "tiles", c.slide, "--preset", "bwh_biopsy", "-q", "--out",
                     os.path.join(cd, "p.h5"), "--mag", "0.01")
            req = ("slides",)
        else:
            argv = M(c, "bench", "read", c.slide, "--preset", "bwh_biopsy", "--max-tiles", "4",
                     "--reps", "1", "--mag", "0.01")
            req = ("slides",)
        add("%s-mag-0.01" % cmd, argv, ("--mag", "good.svs"), (c.slide,), requires=req,
            expect=(1, 2))
    add("classify-size-16384", M(c, "classify", c.slide, "--backbone", c.bb, "--model", c.model,
                                 "--preset", "bwh_biopsy", "--device", "cpu", "--chains", "2", "-q",
                                 "--out", os.path.join(c.case_dir("memory/classify-size-16384"), "out"),
                                 "--size", "16384"), ("--size", "good.svs"), (c.slide,),
        requires=("gst", "slides"), expect=(1, 2))
    add("extract-tiles-batch-100000", M(c, "extract", "--backbone", c.bb, "--tiles", c.tiles,
                                        "--device", "cpu", "-q", "--batch", "100000", "--out",
                                        os.path.join(c.case_dir("memory/extract-tiles-batch-100000"), "f.h5")),
        ("--batch",), (c.tiles,), expect=(1, 2))
    add("bench-gemm-2^20-cubed", M(c, "bench", "gemm", "1048576", "1048576", "1048576", "--device",
                                   "cpu"), ("gemm", "1048576"), expect=(1, 2))
    add("bench-mexd-n-1e9", M(c, "bench", "mexd", "--model", c.model, "--n", "1000000000",
                              "--reps", "1", "--warmup", "0", "--device", "cpu"), ("--n",),
        (c.model,), expect=(1, 2))
    add("synth-bags-256GB", M(c, "synth-bags", "--out",
                              os.path.join(c.case_dir("memory/synth-bags-256GB"), "out"),
                              "--slides", "2", "--dim", "65536", "--min-instances", "1000000",
                              "--max-instances", "1000000", "-q"),
        ("--dim", "--max-instances", "instances"), expect=(1, 2))
    add("bench-train-n-1e8", M(c, "bench", "train", "--n", "100000000", "--dim", "768", "--bags",
                               "1", "--steps", "1", "--warmup", "0", "--device", "cpu"),
        ("--n",), expect=(1, 2))
    return cases


def build_cases(c):
    cases = []
    for fam in (fam_model, fam_features, fam_slides, fam_options, fam_outputs, fam_special,
                fam_interrupt, fam_gst, fam_memory):
        cases += fam(c)
    seen = set()
    for k in cases:
        assert k.id not in seen, "duplicate case id " + k.id
        seen.add(k.id)
    return cases


# ------------------------------------------------------------------------------------------------
# checks on outputs


def validate(path, kind):
    """None when the file is complete, else what is wrong."""
    try:
        if kind == "dir":
            return validate_dir(path)
        if kind in ("h5feat", "h5patch", "h5"):
            import h5py
            with h5py.File(path, "r") as h:
                if kind == "h5feat":
                    f = h["features"]
                    if f.ndim != 2 or f.shape[0] < 1:
                        return "features has shape %s" % (f.shape,)
                    f[...]
                    if "coords" in h and h["coords"].shape != (f.shape[0], 2):
                        return "coords has shape %s" % (h["coords"].shape,)
                elif kind == "h5patch":
                    co = h["coords"]
                    if co.ndim != 2 or co.shape[1] != 2:
                        return "coords has shape %s" % (co.shape,)
                    co[...]
                else:
                    if not list(h.keys()):
                        return "no dataset"
            return None
        if kind == "json":
            json.load(open(path))
            return None
        if kind == "jsonl":
            for i, line in enumerate(open(path)):
                if line.strip():
                    json.loads(line)
            return None
        if kind == "png":
            b = open(path, "rb").read()
            if not b.startswith(b"\x89PNG\r\n\x1a\n") or b"IEND" not in b[-16:]:
                return "not a whole PNG"
            import cv2
            if cv2.imread(path) is None:
                return "cv2 cannot read it"
            return None
        if kind.startswith("csv"):
            rows = list(csv.reader(open(path, newline="")))
            want = kind.split(":", 1)[1] if ":" in kind else None
            if not rows or (want and rows[0][0] != want):
                return "no header %r" % want
            bad = [i for i, r in enumerate(rows) if len(r) != len(rows[0])]
            if bad:
                return "row %d has %d cells, the header %d" % (bad[0] + 1, len(rows[bad[0]]), len(rows[0]))
            return None
        if kind == "geojson":
            g = json.load(open(path))
            if g.get("type") != "FeatureCollection" or not isinstance(g.get("features"), list):
                return "not a FeatureCollection"
            return None
        if kind == "safetensors":
            b = open(path, "rb").read()
            n = struct.unpack("<Q", b[:8])[0]
            h = json.loads(b[8:8 + n])
            h.pop("__metadata__", None)
            end = max([e["data_offsets"][1] for e in h.values()] + [0])
            if 8 + n + end != len(b):
                return "the data buffer ends at %d, the file at %d" % (8 + n + end, len(b))
            return None
        if kind == "txt":
            return None
    except Exception as e:  # noqa: BLE001 — any failure to read it is incompleteness
        return "%s: %s" % (type(e).__name__, str(e)[:200])
    return "unknown kind " + kind


EXT_KIND = {".h5": "h5", ".json": "json", ".jsonl": "jsonl", ".png": "png", ".csv": "csv",
            ".geojson": "geojson", ".safetensors": "safetensors"}


def validate_dir(path):
    if not os.path.isdir(path):
        return "not a directory" if os.path.lexists(path) else None
    for dp, dn, fn in os.walk(path):
        for f in fn:
            p = os.path.join(dp, f)
            if temp_like(f, set(fn)):
                continue  # judged by the leftover check
            k = EXT_KIND.get(os.path.splitext(f)[1])
            if k and os.path.isfile(p):
                err = validate(p, k)
                if err:
                    return "%s: %s" % (os.path.relpath(p, path), err)
    return None


def temp_like(name, siblings):
    if name.startswith("."):
        return True
    if re.search(r"\.tmp\d*$", name) or re.search(r"\.tmp\d*\.", name) or name.endswith("~") \
            or name.endswith(".part"):
        return True
    m = re.match(r"^(.+)\.[A-Za-z0-9_]{6}$", name)
    return bool(m and (m.group(1) in siblings or os.path.splitext(m.group(1))[1] in EXT_KIND))


def leftovers_beside(path):
    d, b = os.path.split(path)
    try:
        names = os.listdir(d or ".")
    except OSError:
        return []
    return [n for n in names if n != b and (n.startswith("." + b + ".") or n.startswith(b + ".")
                                            or n.startswith(b + "~"))]


def leftovers_in(d):
    out = []
    if not os.path.isdir(d):
        return out
    for dp, dn, fn in os.walk(d):
        for f in fn + dn:
            if temp_like(f, set(fn) | set(dn)):
                out.append(os.path.relpath(os.path.join(dp, f), d))
    return out


def hash_inputs(paths):
    """{path: sha256} of every regular file (following symlinks to regular files only; special
    files and directories are walked without being opened)."""
    res = {}

    def one(p):
        try:
            st = os.stat(p)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode):
            return
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        res[p] = h.hexdigest()

    for p in paths:
        if os.path.isdir(p) and not os.path.islink(p):
            for dp, dn, fn in os.walk(p):
                for f in fn:
                    one(os.path.join(dp, f))
        else:
            one(p)
    return res


CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


@check
def json_probs(case, stdout, stderr):
    try:
        r = json.loads(stdout)
        p = r["probabilities"]
    except Exception as e:  # noqa: BLE001
        return "stdout is not the JSON result: %s" % e
    if not p or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in p) or \
            abs(sum(p) - 1) > 1e-3:
        return "probabilities %s" % p
    return None


@check
def log_300(case, stdout, stderr):
    out = case.clean_dirs[0]
    lines = [l for l in open(os.path.join(out, "log.jsonl")) if l.strip()]
    return None if len(lines) == 300 else "log.jsonl has %d lines after the rerun, not 300" % len(lines)


@check
def synth_100(case, stdout, stderr):
    out = case.clean_dirs[0]
    h5 = sorted(f for f in os.listdir(os.path.join(out, "h5_files")) if f.endswith(".h5"))
    if len(h5) != 100:
        return "h5_files has %d bags, not 100" % len(h5)
    for f in h5:
        err = validate(os.path.join(out, "h5_files", f), "h5feat")
        if err:
            return "%s: %s" % (f, err)
    return None


# ------------------------------------------------------------------------------------------------
# running


def rss_of(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def killpg(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except OSError:
        pass


def run_once(argv, cwd, env, timeout, out_path, err_path, rlimit_as=0, interrupt=None):
    """(rc, problem or None, seconds, interrupted).  problem: "hang", "runaway", "no-exit"."""
    def pre():
        if rlimit_as:
            resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with open(out_path, "wb") as fo, open(err_path, "wb") as fe:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=fo,
                             stderr=fe, start_new_session=True, preexec_fn=pre)
        problem, sent = None, None
        while True:
            el = time.monotonic() - t0
            wait = 0.1
            if interrupt and sent is None and interrupt[0] != "NONE":
                wait = max(0.0, min(wait, interrupt[1] - el))
            try:
                rc = p.wait(timeout=wait if wait > 0 else 0.0001)
                break
            except subprocess.TimeoutExpired:
                pass
            el = time.monotonic() - t0
            if interrupt and sent is None and interrupt[0] != "NONE" and el >= interrupt[1]:
                killpg(p, getattr(signal, "SIG" + interrupt[0]))
                sent = el
            if sent is not None and el - sent > 10:
                problem = "no-exit"
                killpg(p)
                rc = p.wait()
                break
            if el > timeout:
                problem = "hang"
                killpg(p)
                rc = p.wait()
                break
            if rss_of(p.pid) > RSS_LIMIT:
                problem = "runaway"
                killpg(p)
                rc = p.wait()
                break
        if problem:
            pass
        return rc, problem, time.monotonic() - t0, sent is not None


def prep_case(case, cd):
    if os.path.lexists(cd):
        shutil.rmtree(cd, ignore_errors=True)
    os.makedirs(cd, exist_ok=True)
    for op, a, b in case.prep:
        os.makedirs(os.path.dirname(b if op != "mkdir" and op != "write" else a) or ".",
                    exist_ok=True)
        if op == "copy":
            shutil.copy(a, b)
        elif op == "copytree":
            shutil.copytree(a, b, symlinks=True)
        elif op == "symlink":
            os.symlink(a, b)
        elif op == "hardlink":
            os.link(a, b)
        elif op == "mkdir":
            os.makedirs(a, exist_ok=True)
        elif op == "write":
            open(a, "w").write(b)


def tail(s, n=600):
    s = s.strip()
    s = s[-n:] if len(s) > n else s
    return s.replace("\n", " | ")


def run_case(case, rc_ctx):
    """Runs one case; returns (id, status, problems, rc, stderr tail, seconds, command)."""
    ctx = rc_ctx
    t_start = time.monotonic()
    missing = [r for r in case.requires if r in ctx["unavailable"]]
    cmd = shlex.join(case.argv).replace(ctx["root"], "$T").replace(ctx["src"], "$SRC")
    if missing:
        return dict(id=case.id, status="skip", problems=["needs " + ", ".join(missing)], rc=None,
                    tail="", seconds=0, cmd=cmd)
    cd = ctx["case_dir"](case.id)
    prep_case(case, cd)
    env = dict(ctx["env"])
    env.update(dict(case.env))
    argv = list(case.argv)
    if argv[0] == "gst-launch-1.0":
        env.update(ctx["gst_env"])
    elif ctx["asan"] and len(argv) > 1 and argv[1] in ("classify", "demo"):
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":fast_unwind_on_malloc=0"
    timeout = case.timeout or ctx["timeout"]
    before = hash_inputs(case.inputs)
    logs = os.path.join(ctx["logs"], sanitize(case.id.replace("/", "__")))
    problems, notes = [], []
    rc, problem, secs, interrupted = None, None, 0, False
    if case.interrupt:
        rc1, problem1, s1, interrupted = run_once(argv, cd, env, timeout, logs + ".1.out",
                                                  logs + ".1.err", case.rlimit_as, case.interrupt)
        err1 = open(logs + ".1.err", errors="replace").read()
        if problem1 == "hang":
            problems.append("hang: the interrupted run did not end within %gs" % timeout)
        elif problem1 == "no-exit":
            problems.append("no-exit: still running 10 s after SIG%s" % case.interrupt[0])
        elif problem1 == "runaway":
            problems.append("runaway-memory: over %d GiB" % (RSS_LIMIT >> 30))
        for f in FORBIDDEN:
            if f in err1:
                problems.append("forbidden (interrupted run): %s" % f)
        for path, kind in case.required + case.outputs:
            if os.path.lexists(path):
                e = validate(path, kind)
                if e:
                    problems.append("incomplete after SIG%s at %gs: %s: %s" % (
                        case.interrupt[0], case.interrupt[1], os.path.relpath(path, cd), e))
        notes.append("first run: %s after %.2f s, exit %s; %d temporary file(s) left" % (
            "SIG%s sent" % case.interrupt[0] if interrupted else "ended on its own", s1, rc1,
            sum(len(leftovers_in(d)) for d in case.clean_dirs)))
        if case.interrupt[0] == "NONE" and rc1 == 0:
            problems.append("the run with %s exited 0" % ",".join("%s=%s" % e for e in case.env))
        env = {k: v for k, v in env.items() if k not in dict(case.env)}
    rc, problem, secs, _ = run_once(argv, cd, env, timeout, logs + ".out", logs + ".err",
                                    case.rlimit_as)
    out = open(logs + ".out", errors="replace").read()
    err = open(logs + ".err", errors="replace").read()
    text = err + ("\n" + out if case.merged_output else "")
    prefix = "rerun: " if case.interrupt else ""
    if problem == "hang":
        problems.append(prefix + "hang: no exit within %gs" % timeout)
    elif problem == "runaway":
        problems.append(prefix + "runaway-memory: killed over %d GiB resident" % (RSS_LIMIT >> 30))
    else:
        expect = case.expect
        if rc < 0:
            problems.append(prefix + "signal: killed by %s" % signal.Signals(-rc).name
                            if -rc in signal.Signals._value2member_map_ else "signal %d" % -rc)
        elif expect == ("nonzero",):
            if rc == 0:
                problems.append(prefix + "exit-code: 0, expected a failure")
            elif 128 < rc < 160:
                problems.append(prefix + "signal: exit %d (128 + signal)" % rc)
        elif rc not in expect:
            if rc >= 128:
                problems.append(prefix + "signal: exit %d, expected %s" % (rc, "/".join(map(str, expect))))
            else:
                problems.append(prefix + "exit-code: %d, expected %s" % (rc, "/".join(map(str, expect))))
        if case.needles and rc != 0 and not any(n in text for n in case.needles):
            problems.append(prefix + "message: stderr names none of %s" % " / ".join(case.needles))
        missing_all = [n for n in case.needles_all if n not in text]
        if missing_all:
            problems.append(prefix + "message: stderr lacks %s" % " and ".join(missing_all))
        if case.check and rc == 0:
            e = CHECKS[case.check](case, out, err)
            if e:
                problems.append(prefix + "check: " + e)
        # temporary files: after any exit on its own
        for path, kind in case.outputs + case.required:
            if kind == "dir":
                lo = leftovers_in(path)
            else:
                lo = leftovers_beside(path)
            if lo:
                problems.append(prefix + "leftover: %s" % ", ".join(sorted(lo)[:4]))
        for d in case.clean_dirs:
            lo = leftovers_in(d)
            if lo:
                problems.append(prefix + "leftover: %s" % ", ".join(sorted(lo)[:4]))
    # under ASan with allocator_may_return_null=1 a refused allocation prints this warning where
    # a normal build's malloc silently returns NULL: the refusal itself is what the case wants
    judged = "\n".join(l for l in text.splitlines()
                       if "WARNING: AddressSanitizer failed to allocate" not in l)
    for f in FORBIDDEN:
        if f in judged:
            problems.append(prefix + "forbidden: %s" % f)
    for path, kind in case.outputs:
        if os.path.lexists(path):
            e = validate(path, kind)
            if e:
                problems.append(prefix + "output-incomplete: %s: %s" % (base(path), e))
    if rc == 0 and problem is None:
        for path, kind in case.required:
            if not os.path.lexists(path):
                problems.append(prefix + "output-missing: %s" % os.path.relpath(path, cd))
            else:
                e = validate(path, kind)
                if e:
                    problems.append(prefix + "output-incomplete: %s: %s" % (os.path.relpath(path, cd), e))
    after = hash_inputs(case.inputs)
    changed = sorted(p for p in before if after.get(p) != before[p])
    if changed:
        problems.append("input-modified: %s" % ", ".join(
            os.path.relpath(p, cd) if p.startswith(cd) else base(p) for p in changed[:3]))
    # dedupe (the leftover check can see one file through two outputs)
    seen, uniq = set(), []
    for p in problems:
        if p not in seen:
            uniq.append(p)
            seen.add(p)
    if not ctx["keep"]:
        shutil.rmtree(cd, ignore_errors=True)
    return dict(id=case.id, status="fail" if uniq else "pass", problems=uniq, rc=rc,
                tail=tail(text), seconds=round(time.monotonic() - t_start, 3), cmd=cmd,
                notes=notes)


def _worker(args):
    case, ctx = args
    try:
        return run_case(case, ctx)
    except Exception as e:  # noqa: BLE001 — a bug of the suite is a failure of the case
        import traceback
        return dict(id=case.id, status="fail", problems=["suite-error: %s" % e], rc=None,
                    tail=traceback.format_exc()[-600:].replace("\n", " | "), seconds=0,
                    cmd=shlex.join(case.argv))


# ------------------------------------------------------------------------------------------------


def is_asan(path):
    try:
        r = subprocess.run(["ldd", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return b"libasan" in r.stdout
    except OSError:
        return False


def emit_parsers(c, dest):
    """The bad model / backbone / features / slide files (regular files only) for parsers.c."""
    missing = generate(c, log=lambda *a: None)
    os.makedirs(dest, exist_ok=True)
    n = 0
    for sub, prefix in (("model", "model-"), ("backbone", "backbone-"), ("features", "features-"),
                        ("slides", "slide-"), ("slides/bad", "slide-bad-")):
        d = c.gp(sub)
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            p = os.path.join(d, f)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                shutil.copy(p, os.path.join(dest, prefix + f))
                n += 1
    print("%d files for the parsers in %s%s" % (n, dest, " (no slides: %s)" % ", ".join(missing)
                                                 if missing else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mexd", default="build/tools/mexd")
    ap.add_argument("--src", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--family", action="append", choices=FAMILIES)
    ap.add_argument("--case", action="append", help="run only case ids matching this regex")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--counts", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--report", default=os.environ.get("MEXD_BADINPUT_REPORT"),
                    help="write every case's result as JSON lines here (or $MEXD_BADINPUT_REPORT)")
    ap.add_argument("--emit-parsers", metavar="DIR")
    a = ap.parse_args()

    if a.emit_parsers:
        root = tempfile.mkdtemp(prefix="mexd-bad-inputs-")
        try:
            emit_parsers(Ctx(root, a.src, a.mexd), a.emit_parsers)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return 0

    if not a.list and not os.access(a.mexd, os.X_OK):
        print("%s: not an executable" % a.mexd, file=sys.stderr)
        return 1
    root = tempfile.mkdtemp(prefix="mexd-bad-inputs-")
    try:
        return run_suite(a, root)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


def run_suite(a, root):
    c = Ctx(root, a.src, a.mexd)
    cases = build_cases(c)
    if a.family:
        cases = [k for k in cases if k.family in a.family]
    if a.case:
        cases = [k for k in cases if any(re.search(r, k.id) for r in a.case)]
    if a.list:
        if a.counts:
            for fam in FAMILIES:
                n = sum(1 for k in cases if k.family == fam)
                if n:
                    print("%-10s %d" % (fam, n))
            print("%-10s %d" % ("total", len(cases)))
        else:
            for k in cases:
                print(k.id)
        return 0

    t0 = time.monotonic()
    asan = is_asan(c.mexd)
    env = dict(os.environ)
    env.pop("G_DEBUG", None)  # a critical is reported as such (e), not as a SIGTRAP
    env["MEXD_NO_PIPELINE_CACHE"] = "1"
    env["LC_ALL"] = "C.UTF-8"
    if asan:
        # g_try_malloc of an impossible size must return NULL as it does without ASan
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":allocator_may_return_null=1"
    unavailable = set()
    print("bad-input suite: %d cases, temporary tree %s%s" % (len(cases), root,
                                                              " (ASan build)" if asan else ""))
    sys.stdout.flush()
    unavailable |= generate(c)
    need_trained = any(k.family in ("options", "outputs", "special", "model") for k in cases)
    if need_trained:
        try:
            generate_trained(c, env)
        except RuntimeError as e:
            print("warning: the tiny trained models could not be made (%s); the cases using them "
                  "will fail" % e)
    # GStreamer: the plugin beside the build unless GST_PLUGIN_PATH says where
    plugin_dir = env.get("GST_PLUGIN_PATH") or os.path.join(os.path.dirname(c.mexd), "..", "plugins")
    plugin = os.path.join(plugin_dir.split(":")[0], "libgstmexd.so")
    has_classify = subprocess.run([c.mexd, "classify", "--help"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode == 0
    if not has_classify or not os.path.exists(plugin):
        unavailable.add("gst")
    gst_env = {}
    if shutil.which("gst-launch-1.0") and os.path.exists(plugin):
        env["GST_PLUGIN_PATH"] = os.path.abspath(os.path.dirname(plugin))
        env["GST_REGISTRY"] = os.path.join(root, "gst-registry.bin")
        if is_asan(plugin):
            gst_env["LD_PRELOAD"] = subprocess.run(["gcc", "-print-file-name=libasan.so"],
                                                   stdout=subprocess.PIPE, text=True).stdout.strip()
            gst_env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
            env["GST_REGISTRY_FORK"] = "no"
        # the registry, once (a scan per process would cost each case a second)
        subprocess.run(["gst-inspect-1.0", "openslidesrc"], env=dict(env, **gst_env),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        unavailable.add("gst-launch")
    if asan:
        unavailable.add("noasan")
    print("generated in %.1f s%s" % (time.monotonic() - t0, "; unavailable: " +
                                     ", ".join(sorted(unavailable)) if unavailable else ""))
    sys.stdout.flush()
    os.makedirs(c.logs, exist_ok=True)
    os.makedirs(c.cases, exist_ok=True)
    shared = [c.model, c.bb, c.resnet, c.bag, c.tiles, c.cohort, c.slide, c.slide2]
    shared_before = hash_inputs(shared)
    ctx = dict(root=root, src=c.src, env=env, gst_env=gst_env, asan=asan, unavailable=unavailable,
               timeout=a.timeout, keep=a.keep, logs=c.logs, case_dir=c.case_dir)
    # the slow ones first (hangs, interruptions, pipelines), so that they overlap the rest
    slow = lambda k: (0 if k.family in ("special", "interrupt", "gst", "memory") else 1)
    order = sorted(range(len(cases)), key=lambda i: (slow(cases[i]), i))
    results = {}
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        futs = {ex.submit(_worker, (cases[i], ctx)): i for i in order}
        for f in as_completed(futs):
            r = f.result()
            results[r["id"]] = r
    changed = [p for p, h in hash_inputs(shared).items() if shared_before.get(p) != h]
    n_pass = n_fail = n_skip = 0
    report = open(a.report, "w") if a.report else None
    for k in cases:
        r = results[k.id]
        if report:
            report.write(json.dumps(r) + "\n")
        if r["status"] == "pass":
            n_pass += 1
        elif r["status"] == "skip":
            n_skip += 1
        else:
            n_fail += 1
            print("FAIL %s: %s; exit %s; command: %s; stderr: %s" % (
                r["id"], "; ".join(r["problems"]), r["rc"], r["cmd"], r["tail"]))
    if changed:
        n_fail += 1
        print("FAIL suite/shared-inputs: modified during the run: %s" % ", ".join(changed))
    if report:
        report.close()
    print("bad-input suite: %.1f s with %d jobs%s" % (time.monotonic() - t0, a.jobs,
                                                      "; kept %s" % root if a.keep else ""))
    print("%d passed, %d failed" % (n_pass, n_fail) + (", %d skipped" % n_skip if n_skip else ""))
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
