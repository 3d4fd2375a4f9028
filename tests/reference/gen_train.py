#!/usr/bin/python3
"""Writes tests/fixtures/train/: the losses and gradients of docs/TRAINING.md, computed by PyTorch
autograd in float64 from the float32 reference mexd_ref.py, for checking lib/train.

    /usr/bin/python3 tests/reference/gen_train.py [--out DIR] [--quiet]

Each file is one case: seeded float32 weights (the values the C side must load), float32 inputs,
the float64 results rounded to float32 (outputs, `loss`, `grad.<parameter>` for every trainable
parameter) and the loss again in float64 as the metadata entry `loss_f64`.  Dropout is off (p = 0).  The forward passes
are mexd_ref's own functions run on float64 copies of the weights (transmil, nystrom, dyn_moe,
denoiser): the same model the inference fixtures of gen_fixtures.py describe.

  stage0-*.safetensors   TransMIL(D, C) = adapter #1, loss CE(logits, y)
  stage1-*.safetensors   Dyn-MoE (`paper` routing, or the no-routing ablation) + adapter #2,
                         the selective expert loss
  stage2-*.safetensors   the Diff-C denoiser loss mean((eps - eps_theta(z, f_t, rho, t))^2)
  abmil-*.safetensors    the gated-attention ABMIL baseline, loss CE(logits, y)

Names, shapes and the decisions: tests/reference/README.md.  Every case is also checked here
(float32 vs float64 selection and pinv-max choice, margins); test_train_ref.py checks the gradients
against central finite differences.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mexd_ref as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
D, W, H, ITERS = 24, 32, 2, 6  # feature dim, width, heads, pinv iterations
T, FW, BETA = 1000, 16, (1e-4, 0.02)  # diffusion indices, denoiser width, beta range
PAIRS = 32  # antithetic pairs per bag (64 rows)
AB_L, AB_A = 16, 8  # ABMIL width and attention size

# Margins the generator insists on, so that a float32 implementation takes the same discrete
# decisions (selection, ranking, which pinv column sum is the max) as the float64 reference.
MIN_KEEP_MARGIN = 0.01  # |logit difference| of every router row (|p1 - p0| >= ~0.005)
MIN_RANK_GAP = 1e-4  # consecutive ranking keys that decide a selection or its order
MIN_COLMAX_GAP = 1e-4  # relative gap between the max pinv column sum and the next distinct one

CLASS_NAMES = {2: ["normal", "tumor"], 3: ["a", "b", "c"]}

# ---------------------------------------------------------------------------------------------
# cases

STAGE0 = [
    # N = 1: 6 zero landmarks, whose A2 columns tie exactly for the pinv's max column sum
    dict(name="stage0-n1", N=1, C=2, m=8, taps=33, label=1, seed=109),
    # N = 2: Np = 4 (rows 0, 1 repeated), the repeated rows' landmark columns tie for the max
    dict(name="stage0-n2", N=2, C=2, m=8, taps=33, label=0, seed=100),
    dict(name="stage0-n5", N=5, C=3, m=8, taps=5, label=2, seed=12),
    dict(name="stage0-n17", N=17, C=2, m=8, taps=33, label=0, seed=13),
    dict(name="stage0-n40", N=40, C=3, m=8, taps=33, label=1, seed=14),
    # m = 5 divides n = Np + 1 = 10: no Nystrom padding, l = 2
    dict(name="stage0-m5-n9", N=9, C=2, m=5, taps=5, label=1, seed=15),
]

# targets per expert: "any" (a non-empty keep set), "empty" (p1 < p0 on every row), "few3"
# (exactly 3 kept, so k = floor(3 * 0.25) = 0: all three, in rank order)
E2 = dict(E=2, C=2, alpha=[0.25, 0.5], eoc=[0, 1])
STAGE1 = [
    dict(name="stage1-e2-n12-y1", N=12, label=1, taps=33, seed=21, targets=["any", "any"], routing="paper", **E2),
    dict(name="stage1-e2-n12-y0", N=12, label=0, taps=33, seed=21, targets=["any", "any"], routing="paper", **E2),
    dict(name="stage1-e2-n9-empty", N=9, label=1, taps=5, seed=22, targets=["any", "empty"], routing="paper", **E2),
    dict(name="stage1-e3c3-n10-k0", N=10, label=2, taps=5, seed=23, targets=["any", "any", "few3"], routing="paper",
         E=3, C=3, alpha=[0.25, 0.5, 0.25], eoc=[0, 1, 2]),
    dict(name="stage1-e3-n20-y0", N=20, label=0, taps=33, seed=24, targets=["any", "any", "any"], routing="paper",
         E=3, C=2, alpha=[0.25, 0.5, 0.25], eoc=[1, 2]),
    dict(name="stage1-norouting-e2-n12", N=12, label=1, taps=33, seed=21, targets=["any", "any"], routing="none", **E2),
]

STAGE2 = [
    dict(name="stage2-c2", C=2, label=1, prior="rho", seed=31),
    dict(name="stage2-c3", C=3, label=0, prior="rho", seed=32),
    dict(name="stage2-c2-prior-none", C=2, label=0, prior="none", seed=33),
]

ABMIL = [
    dict(name="abmil-n1", N=1, C=2, label=0, seed=41),
    dict(name="abmil-n7", N=7, C=3, label=2, seed=42),
    dict(name="abmil-n50", N=50, C=2, label=1, seed=43),
]

# ---------------------------------------------------------------------------------------------
# seeded weights


class Draw:
    """Seeded draws (torch.Generator, float64 rounded to float32)."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def U(self, shape, bound):
        return ((torch.rand(shape, generator=self.g, dtype=torch.float64) * 2 - 1) * bound).float()

    def N(self, shape, std=1.0, mean=0.0):
        return (mean + torch.randn(shape, generator=self.g, dtype=torch.float64) * std).float()

    def U01(self, shape):
        return torch.rand(shape, generator=self.g, dtype=torch.float64).float()

    def ints(self, lo, hi, n):
        return torch.randint(lo, hi, (n,), generator=self.g)


def linear_init(d, p, name, out, fin, gain=1.0, bias=True):
    """PyTorch's default bound 1/sqrt(fan_in), times a gain on the weight."""
    p[name + ".weight"] = d.U((out, fin), gain / math.sqrt(fin))
    if bias:
        p[name + ".bias"] = d.U((out,), 1.0 / math.sqrt(fin))


def ln_init(d, p, name, n):
    """LayerNorm affine around (1, 0), so that its gradients are tested non-trivially."""
    p[name + ".weight"] = d.N((n,), 0.2, 1.0)
    p[name + ".bias"] = d.N((n,), 0.2)


def transmil_weights(d, prefix, fin, C, taps):
    """TransMIL(fin, C) under `prefix`, in the order of docs/MODEL-FORMAT.md."""
    p = {}
    for name, shape in ref.transmil_param_shapes(fin, C, W, H, taps).items():
        full = f"{prefix}.{name}"
        if name == "fc1.weight":
            linear_init(d, p, f"{prefix}.fc1", W, fin, gain=2.0)
        elif name == "cls_token":
            p[full] = d.N(shape, 1.0)
        elif name.endswith("norm.weight"):
            ln_init(d, p, full[:-len(".weight")], W)
        elif name.endswith("attn.qkv.weight"):
            linear_init(d, p, full[:-len(".weight")], 3 * W, W, gain=2.0, bias=False)
        elif name.endswith("attn.out.weight"):
            linear_init(d, p, full[:-len(".weight")], W, W, gain=1.5)
        elif name.endswith("res_conv.weight"):
            p[full] = d.U(shape, 1.0 / math.sqrt(taps))
        elif name.startswith("ppeg.") and name.endswith(".weight"):
            k = shape[-1]
            p[full] = d.U(shape, 1.0 / k)
            p[full[:-len("weight")] + "bias"] = d.U((W,), 1.0 / k)
        elif name == "head.weight":
            linear_init(d, p, f"{prefix}.head", C, W, gain=2.0)
        else:
            assert full in p, full  # biases, made with their weight
        assert tuple(p[full].shape) == tuple(shape), (full, p[full].shape, shape)
    want = [f"{prefix}.{n}" for n in ref.transmil_param_shapes(fin, C, W, H, taps)]
    assert sorted(want) == sorted(p)
    return {n: p[n] for n in want}


def diffc_weights(d, C):
    """The Diff-C denoiser (docs/MODEL-FORMAT.md order); embed tables U(0, 1)."""
    p = {}
    for i, fin in ((1, 2 * C), (2, FW), (3, FW)):
        linear_init(d, p, f"diffc.cl{i}", FW, fin, gain=1.5)
        p[f"diffc.cl{i}.embed"] = d.U01((T + 1, FW))
    for i in (1, 2, 3):
        ln_init(d, p, f"diffc.norm{i}", FW)
    linear_init(d, p, "diffc.z", FW, W)
    ln_init(d, p, "diffc.norm_z", FW)
    linear_init(d, p, "diffc.out", C, FW, gain=1.5)
    return p


def abmil_weights(d, C):
    p = {}
    linear_init(d, p, "abmil.fc", AB_L, D, gain=2.0)
    linear_init(d, p, "abmil.attn_a", AB_A, AB_L, gain=2.5)
    linear_init(d, p, "abmil.attn_b", AB_A, AB_L, gain=2.5)
    linear_init(d, p, "abmil.attn_c", 1, AB_A, gain=4.0)
    linear_init(d, p, "abmil.classifier", C, AB_L, gain=2.0)
    return p


# ---------------------------------------------------------------------------------------------
# configurations


def transmil_config(m, taps, C):
    return {"feature_dim": D, "width": W, "heads": H, "landmarks": m, "pinv_iterations": ITERS,
            "res_conv_taps": taps, "classes": CLASS_NAMES[C]}


def model_config(c, diffusion=None):
    """A whole mexd-model/1 configuration (docs/MODEL-FORMAT.md keys)."""
    cfg = transmil_config(8, c.get("taps", 33), c["C"])
    cfg.update({"experts": c["E"], "alpha": c["alpha"], "expert_of_class": c["eoc"], "mode": "paper"})
    if diffusion is not None:
        cfg["diffusion"] = diffusion
    return cfg


def abmil_config(C):
    return {"arch": "abmil", "feature_dim": D, "width": AB_L, "attn_dim": AB_A, "classes": CLASS_NAMES[C]}


# ---------------------------------------------------------------------------------------------
# the losses (mexd_ref's forward functions; any float dtype, autograd flows through them)


def ce(logits, y):
    """PyTorch's cross_entropy of one row (mean over the one row)."""
    return F.cross_entropy(logits.reshape(1, -1), torch.tensor([int(y)]))


def stage0_loss(p, x, label, cfg):
    a = ref.transmil(x, p, "adapter1", cfg)
    return {"logits": a["logits"], "loss": ce(a["logits"], label)}


def stage1_loss(p, P, label, cfg, routing):
    """docs/TRAINING.md stage 1.  routing 'paper': adapter #2 on the gated selected rows;
    'none' (the no-routing ablation): adapter #2 on all N rows of P, ungated, in instance order."""
    N = P.shape[0]
    E = cfg["experts"]
    moe = ref.dyn_moe(P, N, p, cfg, "paper")  # selection without gradient; gates carry it
    rows = moe["rows"] if routing == "paper" else P
    a2 = ref.transmil(rows, p, "adapter2", cfg)
    logits2 = a2["logits"]
    u = torch.stack([ref.linear(moe["centroid"][r], p, f"moe.classifier.{r}") for r in range(E)])
    owner = cfg["expert_of_class"][label]
    terms = [ce(logits2, label)]
    for r in range(E):
        if r == 0 or owner == r:  # CE(u_0, 0) + sum_{r>=1} [expert_of_class[y] = r] CE(u_r, r)
            terms.append(ce(u[r], r))
        else:
            terms.append(torch.zeros((), dtype=P.dtype))
    terms = torch.stack(terms)
    return {"moe": moe, "rows": rows, "logits2": logits2, "rho": torch.softmax(logits2, dim=-1),
            "u": u, "terms": terms, "loss": terms.sum()}


def noised(label, rho, t, eps, C, prior):
    """f_t = sqrt(abar_t) onehot(y) + (1 - sqrt(abar_t)) rho + sqrt(1 - abar_t) eps, row-wise t,
    in float64 from the float32 rho and eps, rounded to float32 (rho = 0 with prior 'none')."""
    _, _, abar = ref.schedule(T, *BETA)
    a = abar[np.asarray(t, dtype=np.int64)][:, None]
    onehot = np.zeros((1, C))
    onehot[0, label] = 1.0
    r = np.asarray(rho, np.float64)[None, :] if prior == "rho" else np.zeros((1, C))
    f = np.sqrt(a) * onehot + (1.0 - np.sqrt(a)) * r + np.sqrt(1.0 - a) * np.asarray(eps, np.float64)
    return f.astype(np.float32)


def stage2_loss(p, z, rho, f_t, t, eps, prior):
    """mean over the S x C elements of (eps - eps_theta(z, f_t, rho, t))^2; t: int64 [S]."""
    rho_in = rho if prior == "rho" else torch.zeros_like(rho)
    e = ref.denoiser(p, z, rho_in, f_t, t)
    return {"eps_theta": e, "loss": ((eps - e) ** 2).mean()}


def abmil_loss(p, x, label):
    """Gated attention MIL (docs/TRAINING.md): h = ReLU(fc x); A = softmax_i(attn_c(tanh(attn_a h)
    * sigmoid(attn_b h))); M = sum_i A_i h_i; logits = classifier(M)."""
    h = torch.relu(ref.linear(x, p, "abmil.fc"))
    a = torch.tanh(ref.linear(h, p, "abmil.attn_a"))
    b = torch.sigmoid(ref.linear(h, p, "abmil.attn_b"))
    s = ref.linear(a * b, p, "abmil.attn_c")[:, 0]
    A = torch.softmax(s, dim=0)
    M = A @ h
    logits = ref.linear(M, p, "abmil.classifier")
    return {"attention": A, "logits": logits, "loss": ce(logits, label)}


def grads64(fn, p32, names):
    """Runs fn(p64) on float64 copies of the float32 weights; -> (outputs, {name: float64 grad})."""
    p64 = {k: v.double() for k, v in p32.items()}
    for k in names:
        p64[k].requires_grad_(True)
    out = fn(p64)
    gs = torch.autograd.grad(out["loss"], [p64[k] for k in names], allow_unused=True)
    return out, {k: (torch.zeros_like(p64[k]) if g is None else g) for k, g in zip(names, gs)}


# ---------------------------------------------------------------------------------------------
# discrete decisions: checks that float32 takes the same ones


class AttnTrace:
    """Records the Nystrom intermediates (a1, a2, a3, z, v) of every attention call made while
    active (wraps mexd_ref.nystrom, which transmil looks up at call time)."""

    def __enter__(self):
        self.traces = []
        self._orig = ref.nystrom

        def wrapped(x, p, prefix, cfg, assoc="right", trace=None):
            tr = {}
            out = self._orig(x, p, prefix, cfg, assoc, tr)
            self.traces.append(tr)
            return out

        ref.nystrom = wrapped
        return self

    def __exit__(self, *exc):
        ref.nystrom = self._orig


def colmax(a2):
    """The pinv init's max column sum of |A2| over all heads: (tie mask, relative gap to the next
    distinct value)."""
    cs = a2.detach().double().abs().sum(dim=-2).flatten()
    cmax = cs.max()
    tied = cs == cmax
    rest = cs[~tied]
    gap = float((cmax - rest.max()) / cmax) if rest.numel() else math.inf
    return tied, gap


def attention_diagnostics(fn32, fn64):
    """Runs the float32 and float64 forwards with traces; -> (min colmax gap, the number of tied
    max columns per attention call, max attention probability).  Fails when float32 would pick
    another max column (or tie set) than float64."""
    with torch.no_grad(), AttnTrace() as t32:
        fn32()
    with torch.no_grad(), AttnTrace() as t64:
        fn64()
    assert len(t32.traces) == len(t64.traces)
    gap, ties, pmax = math.inf, [], 0.0
    for a, b in zip(t32.traces, t64.traces):
        ta, _ = colmax(a["a2"])
        tb, g = colmax(b["a2"])
        if not torch.equal(ta, tb):
            raise RuntimeError("float32 and float64 choose different pinv max columns")
        gap = min(gap, g)
        ties.append(int(tb.sum()))
        pmax = max(pmax, float(b["a1"].max()), float(b["a2"].max()), float(b["a3"].max()))
    return gap, ties, pmax


# ---------------------------------------------------------------------------------------------
# writers


def f32(t):
    return t.detach().double().numpy().astype(np.float32) if isinstance(t, torch.Tensor) else np.float32(t)


def loss_tensors(loss):
    return {"loss": np.array([float(loss)], np.float32), "loss.f64": np.array([float(loss)], np.float64)}


def write(out_dir, name, tensors, meta, quiet):
    # libmexd reads no F64 tensor: the float64 loss travels as metadata `loss_f64` (repr, exact)
    if "loss.f64" in tensors:
        meta = dict(meta, loss_f64=repr(float(tensors.pop("loss.f64")[0])))
    path = os.path.join(out_dir, name + ".safetensors")
    ref.save_safetensors(path, tensors, meta)
    if not quiet:
        extra = " ".join(f"{k}={v}" for k, v in meta.items() if k not in ("mexd.config", "mexd.format"))
        print(f"{name}: {os.path.getsize(path)} bytes  {extra}")


def gen_stage0(c):
    d = Draw(c["seed"])
    cfg = transmil_config(c["m"], c["taps"], c["C"])
    p = transmil_weights(d, "adapter1", D, c["C"], c["taps"])
    x = d.N((c["N"], D), 1.0)
    names = list(p)
    out, g = grads64(lambda q: stage0_loss(q, x.double(), c["label"], cfg), p, names)
    # the float32 reference forward is the same model (the one the C inference code matches)
    with torch.no_grad():
        l32 = ref.transmil(x, p, "adapter1", cfg)["logits"]
    dl = float((l32.double() - out["logits"].detach()).abs().max() / out["logits"].detach().abs().max())
    assert dl < 1e-5, dl
    gap, ties, pmax = attention_diagnostics(lambda: ref.transmil(x, p, "adapter1", cfg),
                                      lambda: ref.transmil(x.double(), {k: v.double() for k, v in p.items()},
                                                           "adapter1", cfg))
    assert gap > MIN_COLMAX_GAP, gap
    t = dict(p)
    t["x"] = x
    t["label"] = np.array([c["label"]], np.int32)
    t["logits"] = f32(out["logits"])
    t.update(loss_tensors(out["loss"]))
    for k in names:
        t["grad." + k] = f32(g[k])
    meta = {"mexd.format": "mexd-transmil/1", "mexd.config": json.dumps(cfg), "stage": "0",
            "n": str(c["N"]), "label": str(c["label"]), "seed": str(c["seed"]),
            "colmax_gap": f"{gap:.3g}", "colmax_ties": json.dumps(ties), "attn_pmax": f"{pmax:.3f}", "fp32_logits_rel": f"{dl:.2g}"}
    return t, meta


def make_stage1_inputs(c, attempt):
    """P [N, W] (a common direction plus noise, scale ~1) and weights, with the routers shifted
    along P's mean so that each expert meets its target."""
    E, C, N = c["E"], c["C"], c["N"]
    d = Draw(c["seed"] * 1000 + attempt)
    mu = d.N((W,), 0.7)
    P = mu + d.N((N, W), 0.7)
    mhat = mu.double() / mu.double().norm()
    p = {}
    for r in range(E):
        w = d.N((2, W), 0.15).double()
        d0 = P.double() @ (w[1] - w[0])
        s0 = P.double() @ mhat  # the shift s moves d_i by s * (P_i . mhat) / |mu|
        tgt = c["targets"][r]
        if tgt == "empty":
            shift = -(float((d0 / s0).max()) + 0.3)
        elif tgt == "few3":
            q = torch.sort(d0 / s0, descending=True).values
            shift = -float(q[2] + q[3]) / 2
        else:
            shift = 0.0
        w[1] += 0.5 * shift * mhat
        w[0] -= 0.5 * shift * mhat
        p[f"moe.router.{r}.weight"] = w.float()
    for r in range(E):
        linear_init(d, p, f"moe.classifier.{r}", E, W, gain=2.0)
    p.update(transmil_weights(d, "adapter2", W, C, c["taps"]))
    return P, p


def stage1_ok(c, P, p, cfg):
    """-> (ok, diagnostics): targets met, float32 selection = float64, margins."""
    N, E = c["N"], c["E"]
    p64 = {k: v.double() for k, v in p.items()}
    with torch.no_grad():
        m64 = ref.dyn_moe(P.double(), N, p64, cfg, "paper")
        m32 = ref.dyn_moe(P, N, p, cfg, "paper")
    if any(not torch.equal(a, b) for a, b in zip(m64["sel"], m32["sel"])):
        return False, "fp32 selection differs"
    pr = m64["probs"]
    margin = float((torch.log(pr[:, :, 1]) - torch.log(pr[:, :, 0])).abs().min())
    if margin < MIN_KEEP_MARGIN:
        return False, f"keep margin {margin:.3g}"
    gap = min(ref.min_rank_gap(rk) for rk in m64["ranked"])
    if gap < MIN_RANK_GAP:
        return False, f"rank gap {gap:.3g}"
    for r, tgt in enumerate(c["targets"]):
        n = int((pr[r, :, 1] > pr[r, :, 0]).sum())
        if (tgt == "empty" and n != 0) or (tgt == "few3" and n != 3) or (tgt == "any" and not 2 <= n <= N - 1):
            return False, f"expert {r} keeps {n} ({tgt})"
    return True, {"keep_margin": margin, "rank_gap": gap,
                  "kept": [int((pr[r, :, 1] > pr[r, :, 0]).sum()) for r in range(E)],
                  "selected": [len(s) for s in m64["sel"]]}


def gen_stage1(c):
    cfg = model_config(c)
    for attempt in range(200):
        P, p = make_stage1_inputs(c, attempt)
        ok, diag = stage1_ok(c, P, p, cfg)
        if ok:
            break
    else:
        raise RuntimeError(f"{c['name']}: no attempt met the targets ({diag})")
    routing = c["routing"]
    names = list(p)
    out, g = grads64(lambda q: stage1_loss(q, P.double(), c["label"], cfg, routing), p, names)
    p64 = {k: v.double() for k, v in p.items()}

    def a2_input(q, PP):
        rows = ref.dyn_moe(PP, c["N"], q, cfg, "paper")["rows"] if routing == "paper" else PP
        return ref.transmil(rows, q, "adapter2", cfg)

    gap, ties, pmax = attention_diagnostics(lambda: a2_input(p, P), lambda: a2_input(p64, P.double()))
    assert gap > MIN_COLMAX_GAP, gap
    moe = out["moe"]
    E = c["E"]
    t = dict(p)
    t["P"] = P
    t["label"] = np.array([c["label"]], np.int32)
    for r in range(E):
        t[f"sel.{r}"] = moe["sel"][r].numpy().astype(np.int32)
    t["probs"] = f32(moe["probs"])
    t["centroid"] = f32(moe["centroid"])
    t["u"] = f32(out["u"])
    t["c"] = f32(moe["c"])
    t["z"] = f32(moe["z"])
    t["rows"] = f32(out["rows"])
    t["logits2"] = f32(out["logits2"])
    t["rho"] = f32(out["rho"])
    t["loss.terms"] = f32(out["terms"])
    t.update(loss_tensors(out["loss"]))
    for k in names:
        t["grad." + k] = f32(g[k])
    meta = {"mexd.format": "mexd-model/1", "mexd.config": json.dumps(cfg), "stage": "1",
            "routing": routing, "n": str(c["N"]), "label": str(c["label"]),
            "seed": str(c["seed"] * 1000 + attempt), "kept": json.dumps(diag["kept"]),
            "selected": json.dumps(diag["selected"]), "keep_margin": f"{diag['keep_margin']:.3g}",
            "min_rank_gap": f"{diag['rank_gap']:.3g}", "colmax_gap": f"{gap:.3g}", "colmax_ties": json.dumps(ties), "attn_pmax": f"{pmax:.3f}"}
    return t, meta


def draw_ts(d):
    """32 draws in [0, T) and their antithetic partners T-1-t (CARD's cat([t, T-1-t])); the first
    draws are pinned to 0 (partner T-1) and 1, and draw 5 repeats draw 4 (an embed row is then
    hit by two rows of the batch)."""
    t = d.ints(0, T, PAIRS)
    t[0], t[1], t[5] = 0, 1, t[4]
    return torch.cat([t, T - 1 - t])


def gen_stage2(c):
    C = c["C"]
    d = Draw(c["seed"])
    diff = {"T": T, "beta_start": BETA[0], "beta_end": BETA[1], "width": FW}
    if c["prior"] == "none":
        diff["prior"] = "none"
    cfg = model_config(dict(E=2, C=C, alpha=[0.25, 0.5], eoc=[0] + [1] * (C - 1)), diff)
    p = diffc_weights(d, C)
    z = d.N((W,), 1.0)
    rho = torch.softmax(d.N((C,), 1.0).double(), dim=0).float()
    ts = draw_ts(d)
    eps = d.N((2 * PAIRS, C), 1.0)
    f_t = torch.from_numpy(noised(c["label"], rho.numpy(), ts.numpy(), eps.numpy(), C, c["prior"]))
    names = list(p)
    out, g = grads64(lambda q: stage2_loss(q, z.double(), rho.double(), f_t.double(), ts, eps.double(),
                                           c["prior"]), p, names)
    t = dict(p)
    t["z"] = z
    t["rho"] = rho
    t["label"] = np.array([c["label"]], np.int32)
    t["t"] = ts.numpy().astype(np.int32)
    t["eps"] = eps
    t["f_t"] = f_t
    t["eps_theta"] = f32(out["eps_theta"])
    t.update(loss_tensors(out["loss"]))
    for k in names:
        t["grad." + k] = f32(g[k])
    meta = {"mexd.format": "mexd-model/1", "mexd.config": json.dumps(cfg), "stage": "2",
            "prior": c["prior"], "label": str(c["label"]), "seed": str(c["seed"])}
    return t, meta


def gen_abmil(c):
    d = Draw(c["seed"])
    p = abmil_weights(d, c["C"])
    x = d.N((c["N"], D), 1.0)
    names = list(p)
    out, g = grads64(lambda q: abmil_loss(q, x.double(), c["label"]), p, names)
    t = dict(p)
    t["x"] = x
    t["label"] = np.array([c["label"]], np.int32)
    t["attention"] = f32(out["attention"])
    t["logits"] = f32(out["logits"])
    t.update(loss_tensors(out["loss"]))
    for k in names:
        t["grad." + k] = f32(g[k])
    meta = {"mexd.format": "mexd-abmil/1", "mexd.config": json.dumps(abmil_config(c["C"])), "stage": "abmil",
            "n": str(c["N"]), "label": str(c["label"]), "seed": str(c["seed"]),
            "attn_max": f"{float(out['attention'].max()):.3f}"}
    return t, meta


GENERATORS = [(STAGE0, gen_stage0), (STAGE1, gen_stage1), (STAGE2, gen_stage2), (ABMIL, gen_abmil)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "train"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    for cases, gen in GENERATORS:
        for c in cases:
            t, meta = gen(c)
            write(args.out, c["name"], t, meta, args.quiet)
    print(f"train fixtures written to {args.out} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
