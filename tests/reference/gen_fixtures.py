#!/usr/bin/python3
"""Writes tests/fixtures/mexd/ (docs/MODEL-FORMAT.md, "Test fixtures") from the reference
mexd_ref.py: seeded random models for E = 2, 3, 4, bags, per-case intermediates, Diff-C cases,
and the authors-layout checkpoint (make_authors_checkpoint.py).

    /usr/bin/python3 tests/reference/gen_fixtures.py [--out DIR] [--check-fp64]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mexd_ref as ref  # noqa: E402
import philox  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
D, W, H, M, ITERS, TAPS, T, FW = 32, 64, 2, 256, 6, 33, 1000, 32
NS = [1, 2, 7, 255, 256, 257, 1000, 4096]
MODES = ["paper", "official"]
BIG_MAX_N = 300  # large intermediates only for N <= 300
CHAINS, CHAIN_SEED, DDIM_K = 4, 1234, 50
TS = [0, 1, 499, 998, 999]

DATASETS = {
    2: dict(classes=["normal", "tumor"], alpha=[0.25, 0.5], expert_of_class=[0, 1]),
    3: dict(classes=["LUAD", "LUSC"], alpha=[0.25, 0.5, 0.25], expert_of_class=[1, 2]),
    4: dict(classes=["normal", "benign", "atypical", "malignant"], alpha=[0.5, 0.5, 0.5, 0.25],
            expert_of_class=[0, 1, 2, 3]),
}


def config(E):
    ds = DATASETS[E]
    return {
        "feature_dim": D, "width": W, "heads": H, "landmarks": M, "pinv_iterations": ITERS,
        "res_conv_taps": TAPS, "classes": ds["classes"], "experts": E, "alpha": ds["alpha"],
        "expert_of_class": ds["expert_of_class"], "mode": "paper",
        "diffusion": {"T": T, "beta_start": 1e-4, "beta_end": 0.02, "width": FW},
    }


def make_weights(E, seed):
    """Seeded weights, in MODEL-FORMAT order.  Linear / conv weights U(±g/√fan_in) (PyTorch's
    default scale times a gain g), LayerNorm affine 1 + 0.1·N and 0.1·N, embeddings U(0,1)."""
    cfg = config(E)
    C = len(cfg["classes"])
    gen = torch.Generator().manual_seed(seed)

    def U(shape, bound):
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1).mul(bound).float()

    def N(shape, std):
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * std).float()

    p = {}

    def lin(name, o, i, gain=1.0, bias=True):
        p[name + ".weight"] = U((o, i), gain / i ** 0.5)
        if bias:
            p[name + ".bias"] = U((o,), 1.0 / i ** 0.5)

    def ln(name, n):
        p[name + ".weight"] = 1.0 + N((n,), 0.1)
        p[name + ".bias"] = N((n,), 0.1)

    for pre, fin in (("adapter1", D), ("adapter2", W)):
        lin(pre + ".fc1", W, fin, gain=2.0)
        p[pre + ".cls_token"] = N((1, 1, W), 1.0)
        for L in ("layer1", "layer2"):
            ln(f"{pre}.{L}.norm", W)
            lin(f"{pre}.{L}.attn.qkv", 3 * W, W, gain=2.5, bias=False)
            lin(f"{pre}.{L}.attn.out", W, W, gain=1.5)
            p[f"{pre}.{L}.attn.res_conv.weight"] = U((H, 1, TAPS, 1), 1.0 / TAPS ** 0.5)
        for k in (7, 5, 3):
            p[f"{pre}.ppeg.conv{k}.weight"] = U((W, 1, k, k), 1.0 / k)
            p[f"{pre}.ppeg.conv{k}.bias"] = U((W,), 1.0 / k)
        ln(pre + ".norm", W)
        lin(pre + ".head", C, W, gain=2.0)
    for r in range(E):
        p[f"moe.router.{r}.weight"] = N((2, W), 0.1)
    for r in range(E):
        lin(f"moe.classifier.{r}", E, W, gain=2.0)
    for i, fin in ((1, 2 * C), (2, FW), (3, FW)):
        lin(f"diffc.cl{i}", FW, fin, gain=1.5)
        p[f"diffc.cl{i}.embed"] = torch.rand((T + 1, FW), generator=gen, dtype=torch.float64).float()
    for i in (1, 2, 3):
        ln(f"diffc.norm{i}", FW)
    lin("diffc.z", FW, W)
    ln("diffc.norm_z", FW)
    lin("diffc.out", C, FW)
    return p, cfg


def order_like_format(p, E):
    """Reorder to the order of docs/MODEL-FORMAT.md's tables (cosmetic)."""
    names = []
    for pre in ("adapter1", "adapter2"):
        names += [f"{pre}.fc1.weight", f"{pre}.fc1.bias", f"{pre}.cls_token"]
        for L in ("layer1", "layer2"):
            names += [f"{pre}.{L}.norm.weight", f"{pre}.{L}.norm.bias", f"{pre}.{L}.attn.qkv.weight",
                      f"{pre}.{L}.attn.out.weight", f"{pre}.{L}.attn.out.bias",
                      f"{pre}.{L}.attn.res_conv.weight"]
        for k in (7, 5, 3):
            names += [f"{pre}.ppeg.conv{k}.weight", f"{pre}.ppeg.conv{k}.bias"]
        names += [f"{pre}.norm.weight", f"{pre}.norm.bias", f"{pre}.head.weight", f"{pre}.head.bias"]
    names += [f"moe.router.{r}.weight" for r in range(E)]
    for r in range(E):
        names += [f"moe.classifier.{r}.weight", f"moe.classifier.{r}.bias"]
    for i in (1, 2, 3):
        names += [f"diffc.cl{i}.weight", f"diffc.cl{i}.bias", f"diffc.cl{i}.embed"]
    for i in (1, 2, 3):
        names += [f"diffc.norm{i}.weight", f"diffc.norm{i}.bias"]
    names += ["diffc.z.weight", "diffc.z.bias", "diffc.norm_z.weight", "diffc.norm_z.bias",
              "diffc.out.weight", "diffc.out.bias"]
    assert sorted(names) == sorted(p), set(names) ^ set(p)
    return {n: p[n] for n in names}


def make_bag(n, seed):
    """A mixture of 4 Gaussian clusters in D dims (seeded), so the routers have something to split."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.5, size=(4, D))
    lab = rng.integers(0, 4, size=n)
    x = centers[lab] + rng.normal(0.0, 0.7, size=(n, D))
    return x.astype(np.float32)


def case_tensors(res, N):
    a1, moe, a2 = res["a1"], res["moe"], res["a2"]
    big = N <= BIG_MAX_N
    t = {}
    if big:
        t["a1.h"] = a1["h"]
        t["a1.layer1"] = a1["layer1"]
        t["a1.ppeg"] = a1["ppeg"]
        t["a1.layer2"] = a1["layer2"]
        t["a1.out"] = a1["out"]
    t["a1.logits"] = a1["logits"]
    t["moe.probs"] = moe["probs"]
    for r, s in enumerate(moe["sel"]):
        t[f"moe.sel.{r}"] = s.numpy().astype(np.int32)
    t["moe.centroid"] = moe["centroid"]
    t["moe.c"] = moe["c"]
    t["moe.z"] = moe["z"]
    if big:
        t["moe.rows"] = moe["rows"]
        t["a2.out"] = a2["out"]
    t["a2.logits"] = a2["logits"]
    t["rho"] = res["rho"]
    return t


def fp64_check(x, p, cfg, mode, res32):
    """Diagnostic: the same forward in float64; relative differences of the fp32 fixture."""
    p64 = {k: v.double() for k, v in p.items()}
    try:
        r64 = ref.forward(torch.from_numpy(x).double(), p64, cfg, mode)
    except ref.ReferenceError_:
        return None
    if any(not torch.equal(a, b) for a, b in zip(r64["moe"]["sel"], res32["moe"]["sel"])):
        return "selection differs in fp64"
    worst = 0.0
    for a, b in ((r64["a1"]["out"], res32["a1"]["out"]), (r64["a2"]["logits"], res32["a2"]["logits"]),
                 (r64["rho"], res32["rho"]), (r64["moe"]["z"], res32["moe"]["z"])):
        worst = max(worst, float((a - b.double()).abs().max() / a.abs().max()))
    return worst


def train_denoiser(p, cfg, z, rho, seed, steps=400):
    """Fits the (randomly initialised) denoiser for a few hundred Adam steps to the CARD loss on
    this one conditioning (labels drawn uniformly), so that the chains end near one-hot labels and
    the read-out is not saturated.  Only weight generation: the reference itself is unchanged."""
    C = rho.numel()
    _, _, abar = ref.schedule(cfg["diffusion"]["T"], cfg["diffusion"]["beta_start"], cfg["diffusion"]["beta_end"])
    sab = torch.from_numpy(np.sqrt(abar)).float()
    names = [k for k in p if k.startswith("diffc.") and not k.endswith(".embed")]
    q = {k: (v.clone().requires_grad_(True) if k in names else v) for k, v in p.items()}
    opt = torch.optim.Adam([q[k] for k in names], lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    B = 64
    for _ in range(steps):
        t = torch.randint(0, cfg["diffusion"]["T"], (1,), generator=gen).item()
        y = torch.randint(0, C, (B,), generator=gen)
        f0 = torch.nn.functional.one_hot(y, C).float()
        eps = torch.randn((B, C), generator=gen)
        ft = sab[t] * f0 + (1 - sab[t]) * rho + (1 - sab[t] ** 2).sqrt() * eps
        loss = ((ref.denoiser(q, z, rho, ft, t) - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k in names:
        p[k] = q[k].detach().clone()


def diffc_fixture(p, cfg, z, rho):
    C = rho.numel()
    sched = ref.schedule(cfg["diffusion"]["T"], cfg["diffusion"]["beta_start"], cfg["diffusion"]["beta_end"])
    rng = np.random.default_rng(7)
    f = torch.from_numpy((rho.numpy()[None, :] + rng.normal(0, 1, size=(CHAINS, C))).astype(np.float32))
    t = {"z": z, "rho": rho, "f": f, "ts": np.array(TS, dtype=np.int32)}
    t["eps"] = torch.stack([ref.denoiser(p, z, rho, f, ti) for ti in TS])
    # one CARD step from t = 500 with the Philox noise of that index
    tc = 500
    noise = torch.from_numpy(philox.noise(CHAIN_SEED, tc, CHAINS, C))
    f0, fo = ref.card_step(p, z, rho, f, tc, noise, sched)
    t.update({"card_step.f_in": f, "card_step.t": np.array([tc], np.int32), "card_step.noise": noise,
              "card_step.f0": f0, "card_step.f_out": fo})
    # one DDIM step (K = 50, i = 25), eta = 0 (the noise is stored but has no effect)
    i = 25
    td, sd = ref.ddim_index(i, DDIM_K, T), ref.ddim_index(i - 1, DDIM_K, T)
    noise = torch.from_numpy(philox.noise(CHAIN_SEED, i, CHAINS, C))
    f0, fo = ref.ddim_step(p, z, rho, f, td, sd, noise, sched, 0.0)
    t.update({"ddim_step.f_in": f, "ddim_step.t": np.array([td], np.int32),
              "ddim_step.s": np.array([sd], np.int32), "ddim_step.noise": noise,
              "ddim_step.f0": f0, "ddim_step.f_out": fo})
    f0 = ref.sample(p, z, rho, CHAINS, CHAIN_SEED, sched, steps=0)
    pr, sp = ref.readout(f0)
    t.update({"card.f0": f0, "card.probs": pr, "card.spread": sp})
    f0 = ref.sample(p, z, rho, CHAINS, CHAIN_SEED, sched, steps=DDIM_K, eta=0.0)
    pr, sp = ref.readout(f0)
    t.update({"ddim.f0": f0, "ddim.probs": pr, "ddim.spread": sp})
    meta = {"seed": str(CHAIN_SEED), "chains": str(CHAINS), "ddim_steps": str(DDIM_K), "eta": "0",
            "card_step.t": str(tc), "ddim_step.i": str(i)}
    return t, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "mexd"))
    ap.add_argument("--check-fp64", action="store_true", help="also run every case in float64 and print the difference")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    bags = {}
    for n in NS:
        bags[n] = make_bag(n, 1000 + n)
        ref.save_safetensors(os.path.join(args.out, f"bag-n{n}.safetensors"), {"x": bags[n]})
    for E in (2, 3, 4):
        p, cfg = make_weights(E, 100 + E)
        p = order_like_format(p, E)
        ref.save_safetensors(os.path.join(args.out, f"model-e{E}.safetensors"), p,
                             {"mexd.format": "mexd-model/1", "mexd.config": json.dumps(cfg)})
        diff_cond = None
        with torch.no_grad():
            for mode in MODES:
                for n in NS:
                    x = torch.from_numpy(bags[n])
                    meta = {"n": str(n), "mode": mode, "experts": str(E)}
                    name = f"case-e{E}-{mode}-n{n}.safetensors"
                    try:
                        res = ref.forward(x, p, cfg, mode)
                    except ref.ReferenceError_ as e:
                        meta["error"] = str(e)
                        ref.save_safetensors(os.path.join(args.out, name), {}, meta)
                        if not args.quiet:
                            print(f"{name}: error: {e}")
                        continue
                    gaps = [ref.min_rank_gap(rk) for rk in res["moe"]["ranked"]]
                    meta["min_rank_gap"] = repr(min(gaps))
                    ref.save_safetensors(os.path.join(args.out, name), case_tensors(res, n), meta)
                    if mode == "paper" and n == 257:
                        diff_cond = (res["moe"]["z"].clone(), res["rho"].clone())
                    if not args.quiet:
                        moe = res["moe"]
                        R = moe["probs"].shape[1]
                        kept = [int((moe["probs"][r, :, 1] > moe["probs"][r, :, 0]).sum()) for r in range(E)]
                        sel = [("0row" if moe["zero_row"][r] else len(moe["sel"][r])) for r in range(E)]
                        extra = ""
                        if args.check_fp64:
                            extra = f" fp64 rel {fp64_check(bags[n], p, cfg, mode, res)}"
                        print(f"{name}: R={R} kept={kept} sel={sel} gap={min(gaps):.2g} c={[round(float(v), 3) for v in moe['c']]} "
                              f"rho={[round(float(v), 3) for v in res['rho']]}{extra}")
            with torch.enable_grad():
                train_denoiser(p, cfg, *diff_cond, seed=200 + E)
            ref.save_safetensors(os.path.join(args.out, f"model-e{E}.safetensors"), p,
                                 {"mexd.format": "mexd-model/1", "mexd.config": json.dumps(cfg)})
            t, meta = diffc_fixture(p, cfg, *diff_cond)
            if args.check_fp64:
                p64 = {k: v.double() for k, v in p.items()}
                s64 = ref.schedule(T)
                for K, nm in ((0, "card"), (DDIM_K, "ddim")):
                    f64 = ref.sample(p64, diff_cond[0].double(), diff_cond[1].double(), CHAINS, CHAIN_SEED, s64, steps=K,
                                     noise_fn=lambda i: torch.from_numpy(philox.noise(CHAIN_SEED, i, CHAINS, len(cfg["classes"]))).double())
                    d = float((f64 - t[nm + ".f0"].double()).abs().max() / f64.abs().max())
                    print(f"diffc-e{E} {nm}.f0 fp32 vs fp64 rel {d:.3g}")
            ref.save_safetensors(os.path.join(args.out, f"diffc-e{E}.safetensors"), t, meta)
            if not args.quiet:
                print(f"diffc-e{E}: card.probs {t['card.probs'].tolist()} ddim.probs {t['ddim.probs'].tolist()}")
    import make_authors_checkpoint
    make_authors_checkpoint.write(os.path.join(args.out, "model-e2.safetensors"),
                                  os.path.join(args.out, "authors-e2.pth"))
    print(f"fixtures written to {args.out} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
