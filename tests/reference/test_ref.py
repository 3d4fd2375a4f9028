#!/usr/bin/python3
"""Self-checks of the reference (runs standalone or under pytest):

    /usr/bin/python3 tests/reference/test_ref.py
"""
import ctypes
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "tests", "fixtures", "mexd")
sys.path.insert(0, HERE)
import mexd_ref as ref  # noqa: E402
import philox  # noqa: E402


def test_philox_kat():
    kat = [((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
           ((0xffffffff,) * 4, (0xffffffff, 0xffffffff), (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
           ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
            (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]
    for ctr, key, want in kat:
        assert tuple(philox.philox4x32_10(ctr, key)) == want, (ctr, key)
    # layout: class 4b+j of chain s at step t is word j of counter (t, s, b)
    nz = philox.noise(42, 7, 3, 6)
    z = philox.normal4(42, 7, 2, 1)
    assert nz[2, 4] == z[0] and nz[2, 5] == z[1]
    # moments
    v = np.array([philox.normal4(0x123456789abcdef, t, 0, 0) for t in range(5000)], dtype=np.float64)
    assert abs(v.mean()) < 0.03 and abs(v.var() - 1) < 0.05


def test_philox_vs_c_library():
    lib = os.path.join(ROOT, "build", "lib", "libmexd.so")
    if not os.path.exists(lib):
        print("  (skipped: no build/lib/libmexd.so)")
        return
    L = ctypes.CDLL(lib)
    L.mexd_philox_noise.argtypes = [ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p]
    for seed, t, S, C in ((42, 7, 3, 6), (1234, 1000, 4, 2), (0x123456789abcdef, 999, 4, 4), (2 ** 64 - 1, 0, 2, 9)):
        o = np.zeros(S * C, np.float32)
        L.mexd_philox_noise(seed, t, S, C, o.ctypes.data)
        assert np.array_equal(o.reshape(S, C), philox.noise(seed, t, S, C)), (seed, t)


def test_sort_stability():
    """Documents the finding: torch.sort(descending=True) on CPU is not stable for ties in torch
    1.13 (wrong beyond 16 elements); stable=True is, and that is what the reference uses."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (1000,), generator=g).float()
    want = sorted(range(x.numel()), key=lambda k: (-x[k].item(), k))
    assert torch.sort(x, descending=True, stable=True).indices.tolist() == want
    assert ref._rank_desc(x).tolist() == want
    default_stable = torch.sort(x, descending=True).indices.tolist() == want
    print(f"  torch {torch.__version__}: default descending sort stable for ties: {default_stable}")


def _nys_cfg(m):
    return {"heads": 2, "landmarks": m, "pinv_iterations": 6, "res_conv_taps": 33}


def _nys_params(W, H, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.qkv.weight": torch.randn(3 * W, W, generator=g) * 2.5 / W ** 0.5,
            "a.out.weight": torch.randn(W, W, generator=g) / W ** 0.5,
            "a.out.bias": torch.randn(W, generator=g) * 0.1,
            "a.res_conv.weight": torch.randn(H, 1, 33, 1, generator=g) * 0.2}


def test_nystrom_association():
    W, m = 64, 32
    p = _nys_params(W, 2)
    for n in (5, 31, 32, 33, 100, 257):
        x = torch.randn(n, W, generator=torch.Generator().manual_seed(n))
        r = ref.nystrom(x, p, "a", _nys_cfg(m), assoc="right")
        l = ref.nystrom(x, p, "a", _nys_cfg(m), assoc="left")
        e = float((r - l).abs().max() / l.abs().max())
        assert e < 1e-5, (n, e)


def test_nystrom_padding_and_landmarks():
    W, m = 64, 32
    p = _nys_params(W, 2)
    for n, n_p in ((64, 64), (96, 96), (65, 96), (5, 32)):
        tr = {}
        x = torch.randn(n, W, generator=torch.Generator().manual_seed(n))
        out = ref.nystrom(x, p, "a", _nys_cfg(m), trace=tr)
        assert out.shape == (n, W)
        assert tr["a1"].shape == (2, n_p, m), (n, tr["a1"].shape)  # no padding when m | n
    # zero rows in front and landmarks with the unpadded n: a manual recomputation for n = 65
    n, H, dh = 65, 2, 32
    x = torch.randn(n, W, generator=torch.Generator().manual_seed(1)).double()
    pd = {k: v.double() for k, v in p.items()}
    tr = {}
    ref.nystrom(x, pd, "a", _nys_cfg(m), trace=tr)
    xp = torch.cat([torch.zeros(31, W, dtype=torch.double), x])
    q = (xp @ pd["a.qkv.weight"][:W].T).reshape(96, H, dh).transpose(0, 1) / math.sqrt(dh)
    k = (xp @ pd["a.qkv.weight"][W:2 * W].T).reshape(96, H, dh).transpose(0, 1)
    l = 3  # ceil(65/32)
    ql = torch.stack([q[:, j * l:(j + 1) * l].mean(1) for j in range(m)], 1)
    kl = torch.stack([k[:, j * l:(j + 1) * l].mean(1) for j in range(m)], 1)
    assert torch.allclose(torch.softmax(ql @ kl.transpose(1, 2), -1), tr["a2"], atol=1e-12)
    assert torch.allclose(torch.softmax(q @ kl.transpose(1, 2), -1), tr["a1"], atol=1e-12)


def test_pinv():
    """The Newton iterations converge to the inverse of a well-conditioned softmax matrix, and the
    init scalar is max row abs-sum × max column abs-sum over all heads."""
    g = torch.Generator().manual_seed(3)
    a = torch.softmax(torch.randn(2, 16, 16, generator=g, dtype=torch.float64) * 4, -1)
    z = ref.pinv_iter(a, 40)
    assert torch.allclose(z, torch.linalg.inv(a), atol=1e-8)
    z0 = ref.pinv_iter(a, 0)
    s = a.abs().sum(-1).max() * a.abs().sum(-2).max()
    assert torch.allclose(z0, a.transpose(-1, -2) / s)


def test_transmil_param_count():
    for D, C in ((768, 2), (384, 3), (1024, 4), (512, 2)):
        n = sum(math.prod(s) for s in ref.transmil_param_shapes(D, C).values())
        assert n == 512 * D + 2146832 + 513 * C, (D, C, n)
    s = ref.transmil_param_shapes(768, 2)
    layer = sum(math.prod(v) for k, v in s.items() if k.startswith("layer1."))
    ppeg = sum(math.prod(v) for k, v in s.items() if k.startswith("ppeg."))
    assert layer == 1050376 and ppeg == 44032, (layer, ppeg)


def test_transmil_square_padding():
    for N, S in ((1, 1), (2, 2), (4, 2), (5, 3), (255, 16), (256, 16), (257, 17), (4096, 64)):
        assert ref.square_side(N) == S


def test_card_posterior():
    """γ0, γ1, γ2 and σ² are the Gaussian conditional q(f_{t-1} | f_t, f_0) computed from the
    marginal of f_{t-1} and the one-step kernel."""
    _, alpha, abar = ref.schedule()
    rng = np.random.default_rng(0)
    for t in (1, 2, 10, 500, 998, 999):
        a, Ap = alpha[t], abar[t - 1]
        f0, rho, ft = rng.normal(size=3)
        # f_{t-1} = mu1 + sqrt(1-A') e1;  f_t = sqrt(a) f_{t-1} + (1-sqrt(a)) rho + sqrt(1-a) e2
        mu1, v1 = math.sqrt(Ap) * f0 + (1 - math.sqrt(Ap)) * rho, 1 - Ap
        mut = math.sqrt(a) * mu1 + (1 - math.sqrt(a)) * rho
        vt = a * v1 + (1 - a)
        cov = math.sqrt(a) * v1
        mean = mu1 + cov / vt * (ft - mut)
        var = v1 - cov * cov / vt
        g0, g1, g2, sigma = ref.card_coefs(alpha, abar, t)
        assert abs(vt - (1 - abar[t])) < 1e-12  # the marginal of f_t
        assert abs(g0 * f0 + g1 * ft + g2 * rho - mean) < 1e-9 * max(1, abs(mean)), t
        assert abs(sigma ** 2 - var) < 1e-12, t


def test_ddim_indices_and_eta0():
    T = 1000
    for K in (2, 3, 50, 1000):
        tau = [ref.ddim_index(i, K, T) for i in range(K)]
        assert tau[0] == 0 and tau[-1] == T - 1 and all(b > a for a, b in zip(tau, tau[1:]))
    _, _, abar = ref.schedule()
    k0, k1, k2, sigma = ref.ddim_coefs(abar, 999, 979, 0.0)
    assert sigma == 0 and abs(k0 + k1 - 1) < 1e-15


def test_sampler_readout_shapes():
    p, cfg = ref.load_model(os.path.join(FIX, "model-e4.safetensors"))
    C = len(cfg["classes"])
    z = torch.randn(cfg["width"])
    rho = torch.softmax(torch.randn(C), 0)
    sched = ref.schedule(20)  # a short schedule: indices 0..19 of the embedding tables
    for steps in (0, 2, 5):
        f0 = ref.sample(p, z, rho, 3, 99, sched, steps=steps)
        assert f0.shape == (3, C) and f0.dtype == torch.float32
        pr, sp = ref.readout(f0)
        assert pr.shape == (C,) and sp.shape == (C,)
        assert abs(float(pr.sum()) - 1) < 1e-6 and bool((sp >= 0).all())
    q = torch.softmax(-(f0 - 1) ** 2, 1)
    assert torch.allclose(ref.readout(f0)[1], torch.from_numpy(q.numpy().std(0)))


FORMAT_CASE = ["a1.h", "a1.layer1", "a1.ppeg", "a1.layer2", "a1.out", "a1.logits", "moe.probs",
               "moe.centroid", "moe.c", "moe.z", "moe.rows", "a2.out", "a2.logits", "rho"]


def test_fixtures_shapes_and_determinism():
    import gen_fixtures as gf
    for E in (2, 3, 4):
        p, cfg = ref.load_model(os.path.join(FIX, f"model-e{E}.safetensors"))
        W, C, D = cfg["width"], len(cfg["classes"]), cfg["feature_dim"]
        F_, T = cfg["diffusion"]["width"], cfg["diffusion"]["T"]
        want = {}
        for pre, fin in (("adapter1", D), ("adapter2", W)):
            want.update({f"{pre}.{k}": s for k, s in ref.transmil_param_shapes(fin, C, W, cfg["heads"], cfg["res_conv_taps"]).items()})
        for r in range(E):
            want[f"moe.router.{r}.weight"] = (2, W)
            want[f"moe.classifier.{r}.weight"] = (E, W)
            want[f"moe.classifier.{r}.bias"] = (E,)
        for i, fin in ((1, 2 * C), (2, F_), (3, F_)):
            want.update({f"diffc.cl{i}.weight": (F_, fin), f"diffc.cl{i}.bias": (F_,), f"diffc.cl{i}.embed": (T + 1, F_),
                         f"diffc.norm{i}.weight": (F_,), f"diffc.norm{i}.bias": (F_,)})
        want.update({"diffc.z.weight": (F_, W), "diffc.z.bias": (F_,), "diffc.norm_z.weight": (F_,),
                     "diffc.norm_z.bias": (F_,), "diffc.out.weight": (C, F_), "diffc.out.bias": (C,)})
        assert {k: tuple(v.shape) for k, v in p.items()} == want
        for mode in ("paper", "official"):
            for n in gf.NS:
                t, meta = ref.load_safetensors(os.path.join(FIX, f"case-e{E}-{mode}-n{n}.safetensors"))
                assert meta["n"] == str(n) and meta["mode"] == mode and meta["experts"] == str(E)
                if "error" in meta:
                    assert E == 2 and mode == "official" and not t
                    continue
                S = ref.square_side(n)
                Np = S * S
                R = n if mode == "paper" else Np
                sel = [t[f"moe.sel.{r}"] for r in range(E)]
                assert all(s.dtype == np.int32 and s.ndim == 1 and (s.size == 0 or s.max() < R) for s in sel)
                M = sum(max(s.size, 1) for s in sel)
                Mp = ref.square_side(M) ** 2
                shapes = {"a1.h": (n, W), "a1.layer1": (Np + 1, W), "a1.ppeg": (Np + 1, W), "a1.layer2": (Np + 1, W),
                          "a1.out": (Np + 1, W), "a1.logits": (C,), "moe.probs": (E, R, 2), "moe.centroid": (E, W),
                          "moe.c": (E,), "moe.z": (W,), "moe.rows": (M, W), "a2.out": (Mp + 1, W), "a2.logits": (C,),
                          "rho": (C,)}
                for name in FORMAT_CASE:
                    big = name in ("a1.h", "a1.layer1", "a1.ppeg", "a1.layer2", "a1.out", "moe.rows", "a2.out")
                    if big and n > gf.BIG_MAX_N:
                        assert name not in t
                        continue
                    assert t[name].shape == shapes[name], (E, mode, n, name, t[name].shape)
                    assert t[name].dtype == np.float32
        # determinism: recompute two cases
        x = torch.from_numpy(ref.load_safetensors(os.path.join(FIX, "bag-n7.safetensors"))[0]["x"])
        for mode in ("paper", "official"):
            res = ref.forward(x, p, cfg, mode)
            t, _ = ref.load_safetensors(os.path.join(FIX, f"case-e{E}-{mode}-n7.safetensors"))
            assert np.array_equal(res["rho"].numpy(), t["rho"])
        d, meta = ref.load_safetensors(os.path.join(FIX, f"diffc-e{E}.safetensors"))
        S_, ts = int(meta["chains"]), d["ts"]
        assert d["f"].shape == (S_, C) and d["eps"].shape == (len(ts), S_, C)
        for k in ("card", "ddim"):
            assert d[k + ".f0"].shape == (S_, C) and d[k + ".probs"].shape == (C,)
        sched = ref.schedule(T)
        f0, fo = ref.card_step(p, torch.from_numpy(d["z"]), torch.from_numpy(d["rho"]), torch.from_numpy(d["card_step.f_in"]),
                               int(d["card_step.t"][0]), torch.from_numpy(d["card_step.noise"]), sched)
        assert np.array_equal(fo.numpy(), d["card_step.f_out"])


def _run_convert(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert.py"), *args],
                          capture_output=True, text=True)


def test_convert_authors_checkpoint():
    pth = os.path.join(FIX, "authors-e2.pth")
    p, cfg = ref.load_model(os.path.join(FIX, "model-e2.safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "m.safetensors")
        r = _run_convert("mexd-official", pth, out, "--dataset", "camelyon16")
        assert r.returncode == 0, r.stderr
        assert "warning" not in r.stderr, r.stderr  # the unused top-level keys are skipped silently
        q, cfg2 = ref.load_model(out)
        want = {k: v for k, v in p.items() if not k.startswith("diffc.")}
        assert list(q) == list(want)
        for k in want:
            assert torch.equal(q[k], want[k]), k
        c1 = {k: v for k, v in cfg.items() if k not in ("diffusion", "mode")}
        c2 = {k: v for k, v in cfg2.items() if k != "mode"}
        assert c1 == c2 and cfg2["mode"] == "official", (c1, c2)
        # wrapped, "module." prefixed, with a stray key: same tensors, a warning
        sd = torch.load(pth)
        wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}}
        wrapped["state_dict"]["module.stray"] = torch.zeros(3)
        wp = os.path.join(tmp, "w.pth")
        torch.save(wrapped, wp)
        out2 = os.path.join(tmp, "m2.safetensors")
        r = _run_convert("mexd-official", wp, out2)
        assert r.returncode == 0 and "stray" in r.stderr, r.stderr
        assert all(torch.equal(a, b) for a, b in zip(ref.load_model(out2)[0].values(), q.values()))
        # a missing key and a wrong shape: exit 1 naming the key
        bad = dict(sd)
        del bad["agg1.layer2.attn.to_qkv.weight"]
        torch.save(bad, wp)
        r = _run_convert("mexd-official", wp, out2)
        assert r.returncode == 1 and "agg1.layer2.attn.to_qkv.weight" in r.stderr, r.stderr
        bad = dict(sd)
        bad["gate1.weight"] = torch.zeros(3, 64)
        torch.save(bad, wp)
        r = _run_convert("mexd-official", wp, out2)
        assert r.returncode == 1 and "gate1.weight" in r.stderr and "shape" in r.stderr, r.stderr
        # a plain TransMIL (the authors' trans1) -> a mexd-transmil/1 file with adapter1 only
        tm = {k[len("trans1."):]: v for k, v in sd.items() if k.startswith("trans1.")}
        torch.save(tm, wp)
        out3 = os.path.join(tmp, "t.safetensors")
        r = _run_convert("transmil", wp, out3, "--classes", "normal,tumor")
        assert r.returncode == 0, r.stderr
        t, meta = ref.load_safetensors(out3)
        assert meta["mexd.format"] == "mexd-transmil/1"
        c3 = json.loads(meta["mexd.config"])
        assert c3 == {k: cfg[k] for k in ("feature_dim", "width", "heads", "landmarks", "pinv_iterations",
                                          "res_conv_taps", "classes")}, c3
        assert sorted(t) == sorted(k for k in p if k.startswith("adapter1."))
        assert all(np.array_equal(t[k], p[k].numpy()) for k in t)


def main():
    tests = [(k, v) for k, v in globals().items() if k.startswith("test_") and callable(v)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001
            failed += 1
            import traceback
            traceback.print_exc()
            print(f"FAIL {name}: {e!r}")
    print(f"{len(tests) - failed}/{len(tests)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
