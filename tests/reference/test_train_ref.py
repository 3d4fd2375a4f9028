#!/usr/bin/python3
"""Self-checks of gen_train.py and the fixtures it wrote (tests/fixtures/train/).

    /usr/bin/python3 tests/reference/test_train_ref.py [--dir DIR] [--no-regen]

- every file's metadata, tensor names, dtypes and shapes (the list the C test is written against);
- the float64 loss and gradients recomputed from the stored float32 weights and inputs equal the
  stored ones;
- every trainable tensor's gradient against central finite differences of the float64 loss along
  two random directions (and the discrete decisions unchanged by the perturbation), plus a full
  torch.autograd.gradcheck of the ABMIL loss;
- stage 0: mexd_ref.transmil in float32 (the forward the C inference code was verified against)
  gives the stored logits; stage 1: the float32 selection equals the stored one; stage 2: f_t
  recomputed, and the vector-t denoiser equals the scalar-t one row by row;
- regeneration: gen_train.py into a temporary directory gives the same files (bytes, or at most
  float32 rounding differences when another machine's BLAS sums differently).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_train as G  # noqa: E402
import mexd_ref as ref  # noqa: E402

FAILS = []


def check(cond, msg):
    if not cond:
        FAILS.append(msg)
        print("FAIL:", msg)


def expected_names(stage, cfg, meta, weights):
    """-> ordered dict name -> (dtype, shape) of a fixture file (weights first, as stored)."""
    C = len(cfg["classes"])
    e = {k: ("F32", tuple(v.shape)) for k, v in weights.items()}
    if stage == "0":
        N = int(meta["n"])
        e.update({"x": ("F32", (N, G.D)), "label": ("I32", (1,)), "logits": ("F32", (C,))})
    elif stage == "1":
        N, E = int(meta["n"]), cfg["experts"]
        e.update({"P": ("F32", (N, G.W)), "label": ("I32", (1,))})
        sel = json.loads(meta["selected"])
        for r in range(E):
            e[f"sel.{r}"] = ("I32", (sel[r],))
        M = sum(sel) if meta["routing"] == "paper" else N
        e.update({"probs": ("F32", (E, N, 2)), "centroid": ("F32", (E, G.W)), "u": ("F32", (E, E)),
                  "c": ("F32", (E,)), "z": ("F32", (G.W,)), "rows": ("F32", (M, G.W)),
                  "logits2": ("F32", (C,)), "rho": ("F32", (C,)), "loss.terms": ("F32", (1 + E,))})
    elif stage == "2":
        S = 2 * G.PAIRS
        e.update({"z": ("F32", (G.W,)), "rho": ("F32", (C,)), "label": ("I32", (1,)), "t": ("I32", (S,)),
                  "eps": ("F32", (S, C)), "f_t": ("F32", (S, C)), "eps_theta": ("F32", (S, C))})
    else:
        N = int(meta["n"])
        e.update({"x": ("F32", (N, G.D)), "label": ("I32", (1,)), "attention": ("F32", (N,)),
                  "logits": ("F32", (C,))})
    e.update({"loss": ("F32", (1,))})
    for k, v in weights.items():
        e["grad." + k] = ("F32", tuple(v.shape))
    return e


WEIGHT_PREFIX = {"0": ("adapter1.",), "1": ("moe.", "adapter2."), "2": ("diffc.",), "abmil": ("abmil.",)}
FORMAT = {"0": "mexd-transmil/1", "1": "mexd-model/1", "2": "mexd-model/1", "abmil": "mexd-abmil/1"}


def loss_fn(stage, cfg, meta, t):
    """-> fn(p) computing the case's loss dict from weights p (any float dtype; inputs in float64)."""
    y = int(t["label"][0])
    if stage == "0":
        x = torch.from_numpy(t["x"]).double()
        return lambda p: G.stage0_loss(p, x, y, cfg)
    if stage == "1":
        P = torch.from_numpy(t["P"]).double()
        return lambda p: G.stage1_loss(p, P, y, cfg, meta["routing"])
    if stage == "2":
        z, rho = torch.from_numpy(t["z"]).double(), torch.from_numpy(t["rho"]).double()
        f_t, eps = torch.from_numpy(t["f_t"]).double(), torch.from_numpy(t["eps"]).double()
        ts = torch.from_numpy(t["t"].astype(np.int64))
        return lambda p: G.stage2_loss(p, z, rho, f_t, ts, eps, meta["prior"])
    x = torch.from_numpy(t["x"]).double()
    return lambda p: G.abmil_loss(p, x, y)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) if a.size else 0.0


def check_file(path, fd=True):
    name = os.path.basename(path)[:-len(".safetensors")]
    t, meta = ref.load_safetensors(path)
    stage = meta.get("stage")
    check(stage in FORMAT, f"{name}: stage {stage!r}")
    check(meta.get("mexd.format") == FORMAT[stage], f"{name}: format {meta.get('mexd.format')}")
    cfg = json.loads(meta["mexd.config"])
    weights = {k: torch.from_numpy(v) for k, v in t.items() if k.startswith(WEIGHT_PREFIX[stage])}
    exp = expected_names(stage, cfg, meta, weights)
    dt = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int32): "I32"}
    got = {k: (dt.get(v.dtype, str(v.dtype)), tuple(v.shape)) for k, v in t.items()}
    check(list(got) == list(exp), f"{name}: names {sorted(set(got) ^ set(exp))} / order")
    for k in exp:
        check(got.get(k) == exp[k], f"{name}: {k} is {got.get(k)}, expected {exp[k]}")
    if stage == "1":
        check(meta.get("routing") in ("paper", "none"), f"{name}: routing")
    if stage == "2":
        check(meta.get("prior") == cfg["diffusion"].get("prior", "rho"), f"{name}: prior metadata vs config")
    # the weights are exactly those the generator makes from the case's seed
    fn = loss_fn(stage, cfg, meta, t)
    names = list(weights)
    out, g = G.grads64(fn, weights, names)
    l64 = float(meta["loss_f64"])
    check(float(out["loss"]) == l64 or rel(float(out["loss"]), np.array([l64])) < 1e-13,
          f"{name}: loss_f64 {float(out['loss'])!r} vs {l64!r}")
    check(np.float32(float(out["loss"])) == t["loss"][0], f"{name}: loss f32")
    worst = max(rel(g[k].numpy(), t["grad." + k]) if np.abs(t["grad." + k]).max() > 0 else
                float(np.abs(g[k].numpy()).max()) for k in names)
    check(worst < 1e-6, f"{name}: recomputed gradients differ from the stored ones by {worst:.3g}")
    # stage-specific checks
    if stage == "0":
        with torch.no_grad():
            l32 = ref.transmil(torch.from_numpy(t["x"]), weights, "adapter1", cfg)["logits"].numpy()
        check(rel(l32, t["logits"]) < 1e-5, f"{name}: float32 mexd_ref.transmil logits vs stored {rel(l32, t['logits']):.3g}")
    if stage == "1":
        with torch.no_grad():
            m32 = ref.dyn_moe(torch.from_numpy(t["P"]), int(meta["n"]), weights, cfg, "paper")
        for r in range(cfg["experts"]):
            check(np.array_equal(m32["sel"][r].numpy(), t[f"sel.{r}"].astype(np.int64)), f"{name}: float32 sel.{r}")
        terms = t["loss.terms"]
        owner = cfg["expert_of_class"][int(t["label"][0])]
        for r in range(1, cfg["experts"]):
            check((terms[1 + r] != 0) == (owner == r), f"{name}: expert term {r} switched wrongly")
    if stage == "2":
        C = len(cfg["classes"])
        ft = G.noised(int(t["label"][0]), t["rho"], t["t"], t["eps"], C, meta["prior"])
        check(np.array_equal(ft, t["f_t"]), f"{name}: f_t recomputed")
        S = t["t"].shape[0]
        check(np.array_equal(t["t"][S // 2:], G.T - 1 - t["t"][:S // 2]), f"{name}: antithetic pairs")
        with torch.no_grad():
            p32 = weights
            rho_in = torch.from_numpy(t["rho"]) if meta["prior"] == "rho" else torch.zeros(C)
            vec = ref.denoiser(p32, torch.from_numpy(t["z"]), rho_in, torch.from_numpy(t["f_t"]),
                               torch.from_numpy(t["t"].astype(np.int64)))
            rows = torch.cat([ref.denoiser(p32, torch.from_numpy(t["z"]), rho_in, torch.from_numpy(t["f_t"][i:i + 1]),
                                           int(t["t"][i])) for i in range(S)])
        check(rel(vec.numpy(), rows.numpy()) < 1e-6, f"{name}: vector-t denoiser vs scalar-t rows")
        check(rel(vec.numpy(), t["eps_theta"]) < 1e-5, f"{name}: float32 eps_theta vs stored")
        used = set(int(v) for v in t["t"])
        for i in (1, 2, 3):
            ge = t[f"grad.diffc.cl{i}.embed"]
            nz = set(np.nonzero(np.abs(ge).sum(axis=1))[0].tolist())
            check(nz <= used, f"{name}: embed{i} gradient outside the drawn t")
    if stage == "abmil":
        check(abs(float(t["attention"].sum()) - 1) < 1e-6, f"{name}: attention sums to 1")
    if fd:
        fd_worst = fd_check(name, stage, cfg, meta, t, fn, weights, g)
        print(f"{name}: ok (recomputed grads {worst:.2g}, finite differences {fd_worst:.2g})")
    return stage


def fd_check(name, stage, cfg, meta, t, fn, weights, g, h=1e-5, dirs=2):
    """Central differences of the float64 loss along random unit directions, one tensor at a time."""
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    base = {k: v.double() for k, v in weights.items()}
    gnorm = math.sqrt(sum(float((v ** 2).sum()) for v in g.values()))
    worst = 0.0
    sel0 = [t[f"sel.{r}"] for r in range(cfg["experts"])] if stage == "1" else None
    with torch.no_grad():
        for k in weights:
            for _ in range(dirs):
                v = torch.randn(base[k].shape, generator=gen, dtype=torch.float64)
                v /= v.norm()
                vals = []
                for s in (1, -1):
                    q = dict(base)
                    q[k] = base[k] + s * h * v
                    o = fn(q)
                    if sel0 is not None:
                        for r in range(cfg["experts"]):
                            assert np.array_equal(o["moe"]["sel"][r].numpy(), sel0[r].astype(np.int64))
                    vals.append(float(o["loss"]))
                fdv = (vals[0] - vals[1]) / (2 * h)
                an = float((g[k] * v).sum())
                err = abs(fdv - an) / max(abs(an), 1e-3 * gnorm, 1e-12)
                worst = max(worst, err)
                check(err < 1e-5, f"{name}: {k}: finite difference {fdv:.10g} vs autograd {an:.10g}")
    return worst


def gradcheck_abmil():
    c = G.ABMIL[1]
    d = G.Draw(c["seed"])
    p = G.abmil_weights(d, c["C"])
    x = d.N((c["N"], G.D), 1.0).double()
    names = list(p)
    inputs = tuple(p[k].double().requires_grad_(True) for k in names)

    def f(*args):
        return G.abmil_loss(dict(zip(names, args)), x, c["label"])["loss"]

    ok = torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
    check(ok, "gradcheck abmil-n7")
    print("gradcheck abmil-n7: ok")


def check_regen(d):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(HERE, "gen_train.py"), "--out", tmp, "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        a_files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
        b_files = sorted(f for f in os.listdir(tmp) if f.endswith(".safetensors"))
        check(a_files == b_files, f"regeneration file list {sorted(set(a_files) ^ set(b_files))}")
        exact = 0
        for f in b_files:
            if f not in a_files:
                continue
            pa, pb = os.path.join(d, f), os.path.join(tmp, f)
            if open(pa, "rb").read() == open(pb, "rb").read():
                exact += 1
                continue
            ta, ma = ref.load_safetensors(pa)
            tb, mb = ref.load_safetensors(pb)
            check(list(ta) == list(tb), f"regen {f}: names")
            for k in ta:
                if k not in tb:
                    continue
                x, y = ta[k], tb[k]
                if x.dtype.kind == "i":
                    check(np.array_equal(x, y), f"regen {f}: {k} differs")
                else:
                    check(x.shape == y.shape and rel(x, y) < 1e-5, f"regen {f}: {k} differs by {rel(x, y):.3g}")
        print(f"regeneration: {exact} of {len(b_files)} files identical byte for byte, the rest within float32 rounding")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.join(G.ROOT, "tests", "fixtures", "train"))
    ap.add_argument("--no-regen", action="store_true")
    ap.add_argument("--no-fd", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    files = sorted(f for f in os.listdir(args.dir) if f.endswith(".safetensors"))
    want = sorted(c["name"] + ".safetensors" for cases, _ in G.GENERATORS for c in cases)
    check(files == want, f"fixture list {sorted(set(files) ^ set(want))}")
    stages = set()
    for f in files:
        stages.add(check_file(os.path.join(args.dir, f), fd=not args.no_fd))
    check(stages == set(FORMAT), f"stages present {stages}")
    gradcheck_abmil()
    if not args.no_regen:
        check_regen(args.dir)
    size = sum(os.path.getsize(os.path.join(args.dir, f)) for f in files)
    print(f"{len(files)} files, {size} bytes")
    check(size < 3 << 20, f"fixtures are {size} bytes (> 3 MiB)")
    if FAILS:
        print(f"{len(FAILS)} failures")
        sys.exit(1)
    print("all ok")


if __name__ == "__main__":
    main()
