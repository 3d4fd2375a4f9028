#!/usr/bin/python3
"""Writes tests/fixtures/train-run/: whole training runs computed by PyTorch, for checking that
`mexd train` (lib/train/trainer.c) trains exactly as PyTorch does over several epochs.

    /usr/bin/python3 tests/reference/gen_train_run.py [--out DIR]

A small cohort (cohort/: labels.csv and one .npy bag per slide, all in the train split) and, for
each stage of docs/TRAINING.md, two epochs of training in float64 with PyTorch autograd and
PyTorch's optimizers, from the initial weights and in the bag order that mexd uses -- both
re-implemented here from their documented definitions, not taken from mexd:

  initial weights  lib/train/params.h: Philox4x32-10 under key (seed), counter (i / 4, h_lo, h_hi,
                   "init"), h = FNV-1a-64 of the parameter's name; uniform, U(0, 1), normal
                   (Box-Muller) or constant per parameter as the model definitions of lib/nn ask
                   (Linear: U(+-1/sqrt(in)), LayerNorm (1, 0), TransMIL's cls_token N(0, 1), ...).
  bag order        lib/train/dataset.h: epoch e's Fisher-Yates permutation of the training slides
                   (Philox, Lemire's multiply-and-reject, tag "shuf").
  stage-2 draws    lib/train/models.c: the 32 antithetic pairs of time indices (tag "dift") and
                   the noise (tag "dife") of (seed, epoch, slide).
  optimizers       stage 0/1 and ABMIL: Lookahead(k 6, alpha 0.5, timm's lazy slow weights) over
                   RAdam with decoupled weight decay 1e-5 (gen_optim.py's classes, the same as the
                   optimizer fixtures); stage 2: Adam after clip_grad_norm_(1.0).  lr 1e-3.
  dropout          0 (the trainer's dropout draws are not part of the comparison).

Cases (one file each, <case>.safetensors): the run's settings as metadata, `init.<name>` (the
initial value of every trainable parameter), `final.<name>` (after the last epoch; float64
rounded to float32) and the mean training loss of each epoch as metadata (`loss_epoch1`, ...,
repr of the float64).  adapter = TransMIL (adapter #1), moe (from the frozen adapter file
moe-init.safetensors, written here), diffusion (from the frozen Dyn-MoE model file
diffusion-init.safetensors, written here), abmil.

Decisions.  A parameter that a step's loss does not reach (an expert classifier whose loss term
is zero for that bag's label) gets a zero gradient, as mexd's tape gives it, not PyTorch's None:
the optimizer steps it (its moments decay, weight decay applies), as the authors' code does with
its masked loss.  The run is in float64; the float32 result of the same run computed here is
written too (`f32.<name>`), and the generator insists that it is within 1e-6 of the float64 one and
that every discrete decision of the run (the Dyn-MoE keep sets and ranks, the pinv's max column)
has a margin float32 cannot cross, so that the C side's 1e-5 tolerance is meaningful.
"""
import argparse
import copy
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_optim as go  # noqa: E402
import gen_train as gt  # noqa: E402
import mexd_ref as ref  # noqa: E402
import philox  # noqa: E402

D, W, H, ITERS, M, TAPS = gt.D, gt.W, gt.H, gt.ITERS, 8, 5
C = 2
CLASSES = ["normal", "tumor"]
N_SLIDES = 10
EPOCHS = 2
LR = 1e-3
SEED = 7  # the training seed (weights, bag order, draws)
COHORT_SEED = 2026
FW, T = 16, 100  # Diff-C width, diffusion indices (see F32_TOL)
AB_L, AB_A = 16, 8
E, ALPHA, EOC = 3, [0.25, 0.5, 0.5], [1, 2]  # the trainer's defaults for two classes

MASK = 0xFFFFFFFF
INIT_TAG, SHUF_TAG, T_TAG, EPS_TAG = 0x696E6974, 0x73687566, 0x64696674, 0x64696665

# margins (see the module comment)
MIN_KEEP_MARGIN = 1e-3  # |logit difference| of every router row, every step
MIN_RANK_GAP = 1e-5
MIN_COLMAX_GAP = 1e-4
# float32 vs float64 PyTorch on the same run.  An Adam-type step is ill-conditioned where a
# gradient component is near eps (update = lr g / (|g| + eps)): Diff-C's embedding tables, whose
# rows are each reached by a few time indices, have thousands of components, and with T = 1000
# some seeds give a component of |g| ~ 1e-8 and a float32/float64 difference of 3e-6 after two
# epochs.  The diffusion case therefore uses T = 100 and the first training seed whose run is
# well-conditioned (run_case), so that the C side's 1e-5 is 10x above the spread of float32.
F32_TOL = 1e-6
# Parameters whose exact gradient is zero: ABMIL's attention logits go through a softmax over the
# instances, which a constant shift does not change, so attn_c's bias gets only rounding noise,
# and an Adam-type optimizer turns noise of 1e-9 into steps of lr.  Its value after a run is the
# rounding of the implementation that ran it (float32 PyTorch and float64 PyTorch differ by 1e-5
# after two epochs here), and it changes no output; the fixture lists it under `noise_params`
# and the test only checks that it stays finite.
NOISE = ("abmil.attn_c.bias",)


# ---------------------------------------------------------------------------------------------
# mexd's random streams, from their definitions


def key_of(seed):
    return (seed & MASK, (seed >> 32) & MASK)


def unit(x):
    return ((x >> 8) + 0.5) / 16777216.0


def fnv1a(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def init_values(name, shape, kind, a, seed):
    n = int(np.prod(shape))
    h = fnv1a(name)
    key = key_of(seed)
    v = np.empty(n, np.float32)
    last = None
    for i in range(n):
        if kind == "const":
            v[i] = np.float32(a)
            continue
        ctr = (i // 2 if kind == "normal" else i // 4, h & MASK, h >> 32, INIT_TAG)
        if ctr != (last[0] if last else None):
            last = (ctr, philox.philox4x32_10(ctr, key))
        x = last[1]
        if kind == "normal":
            r = math.sqrt(-2.0 * math.log(unit(x[0])))
            ang = 2 * math.pi * unit(x[1])
            v[i] = np.float32(a * r * (math.sin(ang) if i % 2 else math.cos(ang)))
        else:
            u = unit(x[i % 4])
            v[i] = np.float32(u if kind == "u01" else -a + 2.0 * a * u)
    return torch.from_numpy(v.reshape(shape))


def spec_linear(prefix, out, fin, bias=True):
    b = 1.0 / math.sqrt(fin)
    s = [(prefix + ".weight", (out, fin), "u", b)]
    return s + ([(prefix + ".bias", (out,), "u", b)] if bias else [])


def spec_transmil(prefix, fin, classes):
    s = spec_linear(prefix + ".fc1", W, fin) + [(prefix + ".cls_token", (1, 1, W), "normal", 1.0)]
    for layer in ("layer1", "layer2"):
        s += [(f"{prefix}.{layer}.norm.weight", (W,), "const", 1.0),
              (f"{prefix}.{layer}.norm.bias", (W,), "const", 0.0)]
        s += spec_linear(f"{prefix}.{layer}.attn.qkv", 3 * W, W, bias=False)
        s += spec_linear(f"{prefix}.{layer}.attn.out", W, W)
        s += [(f"{prefix}.{layer}.attn.res_conv.weight", (H, 1, TAPS, 1), "u", 1.0 / math.sqrt(TAPS))]
    s += [(f"{prefix}.norm.weight", (W,), "const", 1.0), (f"{prefix}.norm.bias", (W,), "const", 0.0)]
    for k in (7, 5, 3):
        s += [(f"{prefix}.ppeg.conv{k}.weight", (W, 1, k, k), "u", 1.0 / k),
              (f"{prefix}.ppeg.conv{k}.bias", (W,), "u", 1.0 / k)]
    return s + spec_linear(prefix + ".head", classes, W)


def spec_moe():
    s = []
    for r in range(E):
        s += spec_linear(f"moe.router.{r}", 2, W, bias=False)
        s += spec_linear(f"moe.classifier.{r}", E, W)
    return s + spec_transmil("adapter2", W, C)


def spec_diffc():
    s = []
    for i in (1, 2, 3):
        s += spec_linear(f"diffc.cl{i}", FW, 2 * C if i == 1 else FW)
        s += [(f"diffc.cl{i}.embed", (T + 1, FW), "u01", 0.0),
              (f"diffc.norm{i}.weight", (FW,), "const", 1.0), (f"diffc.norm{i}.bias", (FW,), "const", 0.0)]
    s += spec_linear("diffc.z", FW, W)
    s += [("diffc.norm_z.weight", (FW,), "const", 1.0), ("diffc.norm_z.bias", (FW,), "const", 0.0)]
    return s + spec_linear("diffc.out", C, FW)


def spec_abmil():
    return (spec_linear("abmil.fc", AB_L, D) + spec_linear("abmil.attn_a", AB_A, AB_L)
            + spec_linear("abmil.attn_b", AB_A, AB_L) + spec_linear("abmil.attn_c", 1, AB_A)
            + spec_linear("abmil.classifier", C, AB_L))


def initial(spec, seed):
    return {name: init_values(name, shape, kind, a, seed) for name, shape, kind, a in spec}


def draw_below(key, i, word1, tag, bound):
    threshold = ((1 << 32) - bound) % bound
    attempt = 0
    while True:
        x = philox.philox4x32_10((i, word1, attempt, tag), key)
        m = x[0] * bound
        if (m & MASK) >= threshold:
            return m >> 32
        attempt += 1


def permutation(seed, epoch, n):
    key = key_of(seed)
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = draw_below(key, i, epoch, SHUF_TAG, i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def diffusion_draws(seed, epoch, bag):
    """-> (t int64 [64], eps float32 [64, C]) of lib/train/models.c's mexd_diffc_t_draw."""
    key = key_of(seed)
    ts = np.zeros(64, np.int64)
    for j in range(0, 32, 4):
        w = philox.philox4x32_10((j // 4, epoch, bag, T_TAG), key)
        for k in range(4):
            v = (w[k] * T) >> 32
            ts[j + k] = v
            ts[32 + j + k] = T - 1 - v
    eps = np.zeros(64 * C, np.float32)
    for i in range(0, 64 * C, 2):
        w = philox.philox4x32_10((i // 2, epoch, bag, EPS_TAG), key)
        r = math.sqrt(-2.0 * math.log(unit(w[0])))
        a = 2 * math.pi * unit(w[1])
        eps[i] = np.float32(r * math.cos(a))
        if i + 1 < 64 * C:
            eps[i + 1] = np.float32(r * math.sin(a))
    return ts, eps.reshape(64, C)


# ---------------------------------------------------------------------------------------------
# the cohort


def make_cohort(seed):
    """N_SLIDES bags [N, D]: background N(0, 1); a tumor bag has 1-4 instances shifted by 1.5
    along a fixed direction.  Labels alternate by a seeded shuffle (half of each)."""
    g = np.random.default_rng(seed)
    direction = g.normal(size=D)
    direction /= np.linalg.norm(direction)
    labels = np.array([0, 1] * (N_SLIDES // 2))
    g.shuffle(labels)
    bags = []
    for i in range(N_SLIDES):
        n = int(g.integers(3, 25))
        x = g.normal(size=(n, D))
        if labels[i] == 1:
            k = int(g.integers(1, min(4, n) + 1))
            x[g.choice(n, k, replace=False)] += 1.5 * direction
        bags.append(x.astype(np.float32))
    return bags, [int(v) for v in labels]


# ---------------------------------------------------------------------------------------------
# the runs


def config_transmil():
    return {"feature_dim": D, "width": W, "heads": H, "landmarks": M, "pinv_iterations": ITERS,
            "res_conv_taps": TAPS, "classes": CLASSES}


def config_model():
    cfg = config_transmil()
    cfg.update({"experts": E, "alpha": ALPHA, "expert_of_class": EOC, "mode": "paper"})
    return cfg


class Margins:
    def __init__(self):
        self.colmax = math.inf
        self.keep = math.inf
        self.rank = math.inf

    def attention(self, traces):
        for tr in traces:
            _, gap = gt.colmax(tr["a2"])
            self.colmax = min(self.colmax, gap)

    def moe(self, m):
        pr = m["probs"].detach()
        self.keep = min(self.keep, float((torch.log(pr[:, :, 1]) - torch.log(pr[:, :, 0])).abs().min()))
        self.rank = min(self.rank, min(ref.min_rank_gap(rk) for rk in m["ranked"]))

    def check(self, what):
        assert self.colmax > MIN_COLMAX_GAP, (what, "pinv max column gap", self.colmax)
        assert self.keep > MIN_KEEP_MARGIN, (what, "router keep margin", self.keep)
        assert self.rank > MIN_RANK_GAP, (what, "rank gap", self.rank)

    def meta(self):
        return {"colmax_gap": f"{self.colmax:.3g}", "keep_margin": f"{self.keep:.3g}",
                "rank_gap": f"{self.rank:.3g}"}


def train(stage, seed, init, frozen, bags, labels, dtype, margins=None, cache=None):
    """Two epochs of `stage` from `init` (trainable, float32 tensors) with the frozen tensors
    `frozen`; -> (final weights, mean loss per epoch)."""
    p = {k: v.to(dtype).clone().requires_grad_(True) for k, v in init.items()}
    fz = {k: v.to(dtype) for k, v in frozen.items()}
    both = dict(fz)
    both.update(p)
    params = [p[k] for k in init]
    if stage == "diffusion":
        opt = torch.optim.Adam(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    else:
        opt = go.Lookahead(go.RAdamDecoupled(params, LR, (0.9, 0.999), 1e-8, 1e-5), 0.5, 6)
    losses = []
    for epoch in range(EPOCHS):
        total = 0.0
        for i in permutation(seed, epoch, N_SLIDES):
            x = torch.from_numpy(bags[i]).to(dtype)
            y = labels[i]
            with gt.AttnTrace() as tr:
                if stage == "adapter":
                    out = gt.stage0_loss(both, x, y, config_transmil())
                elif stage == "abmil":
                    out = gt.abmil_loss(both, x, y)
                elif stage == "moe":
                    out = gt.stage1_loss(both, cache[i].to(dtype), y, config_model(), "paper")
                else:
                    rho, z = (v.to(dtype) for v in cache[i])
                    ts, eps = diffusion_draws(seed, epoch, i)
                    f_t = noised(y, rho, ts, eps)
                    out = gt.stage2_loss(both, z, rho, f_t, torch.from_numpy(ts),
                                         torch.from_numpy(eps).to(dtype), "rho")
            if margins is not None:
                margins.attention(tr.traces)
                if stage == "moe":
                    margins.moe(out["moe"])
            opt_zero(params)
            out["loss"].backward()
            for q in params:  # a parameter the loss does not reach: a zero gradient (see above)
                if q.grad is None:
                    q.grad = torch.zeros_like(q)
            if stage == "diffusion":
                torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            total += float(out["loss"])
        losses.append(total / N_SLIDES)
    return {k: v.detach() for k, v in p.items()}, losses


def opt_zero(params):
    for q in params:
        q.grad = None


def noised(label, rho, ts, eps):
    """f_t = sqrt(abar_t) onehot(y) + (1 - sqrt(abar_t)) rho + sqrt(1 - abar_t) eps, in the
    tensors' dtype."""
    _, _, abar = ref.schedule(T, 1e-4, 0.02)
    a = torch.from_numpy(abar[ts]).to(rho.dtype)[:, None]
    onehot = torch.zeros(1, C, dtype=rho.dtype)
    onehot[0, label] = 1.0
    return a.sqrt() * onehot + (1 - a.sqrt()) * rho[None, :] + (1 - a).sqrt() * torch.from_numpy(eps).to(rho.dtype)


def run_case(stage, spec, frozen, bags, labels, cache64=None, cache32=None, margins=None,
             seeds=(SEED,)):
    """The run of the first seed of `seeds` whose float32 run is within F32_TOL of its float64
    run (an Adam step is ill-conditioned where a gradient is near eps; see F32_TOL)."""
    for seed in seeds:
        init = initial(spec, seed)
        m = copy.deepcopy(margins) if margins else Margins()
        final64, loss64 = train(stage, seed, init, frozen, bags, labels, torch.float64, m, cache64)
        final32, loss32 = train(stage, seed, init, frozen, bags, labels, torch.float32, None, cache32)
        d32 = max(float((final64[k] - final32[k].double()).abs().max()) for k in init if k not in NOISE)
        if d32 < F32_TOL:
            break
        print(f"{stage}: seed {seed} is ill-conditioned (float32 vs float64 {d32:.2g}); the next")
    margins = m
    margins.check(stage)
    diffs = {k: float((final64[k] - final32[k].double()).abs().max()) for k in init if k not in NOISE}
    d32 = max(diffs.values())
    assert d32 < F32_TOL, (stage, "float32 run differs", d32)
    moved = max(float((final64[k] - init[k].double()).abs().max()) for k in init)
    t = {}
    for k in init:
        t["init." + k] = init[k]
        t["final." + k] = final64[k].float()
    meta = {"stage": stage, "epochs": str(EPOCHS), "seed": str(seed), "lr": repr(LR),
            "noise_params": json.dumps([k for k in init if k in NOISE]),
            "f32_max_diff": f"{d32:.3g}", "max_moved": f"{moved:.3g}"}
    meta.update({f"loss_epoch{e + 1}": repr(v) for e, v in enumerate(loss64)})
    meta.update(margins.meta())
    print(f"{stage}: losses {[f'{v:.6f}' for v in loss64]}, moved {moved:.3g}, "
          f"float32 vs float64 {d32:.2g}, margins {margins.meta()}")
    return t, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "fixtures", "train-run"))
    args = ap.parse_args()
    out = args.out
    os.makedirs(os.path.join(out, "cohort"), exist_ok=True)
    torch.set_num_threads(1)

    bags, labels = make_cohort(COHORT_SEED)
    with open(os.path.join(out, "cohort", "labels.csv"), "w") as fp:
        fp.write("slide_id,label,split\n")
        for i, y in enumerate(labels):
            fp.write(f"s{i:02d},{CLASSES[y]},train\n")
            np.save(os.path.join(out, "cohort", f"s{i:02d}.npy"), bags[i])

    common = {"feature_dim": str(D), "width": str(W), "heads": str(H), "landmarks": str(M),
              "pinv_iterations": str(ITERS), "res_conv_taps": str(TAPS), "slides": str(N_SLIDES)}

    def write(name, t, meta):
        meta = dict(meta)
        meta.update(common)
        ref.save_safetensors(os.path.join(out, name + ".safetensors"), t, meta)

    # adapter #1 (TransMIL) and ABMIL, from mexd's initial weights
    write("adapter", *run_case("adapter", spec_transmil("adapter1", D, C), {}, bags, labels))
    t, meta = run_case("abmil", spec_abmil(), {}, bags, labels)
    meta.update({"abmil_width": str(AB_L), "abmil_attn": str(AB_A)})
    write("abmil", t, meta)

    # stage 1 from a frozen adapter #1 (seeded weights of gen_train.py's kind)
    a1 = gt.transmil_weights(gt.Draw(11), "adapter1", D, C, TAPS)
    ref.save_safetensors(os.path.join(out, "moe-init.safetensors"), a1,
                         {"mexd.format": "mexd-transmil/1", "mexd.config": json.dumps(config_transmil())})
    with torch.no_grad():
        P64 = [ref.transmil(torch.from_numpy(b).double(), {k: v.double() for k, v in a1.items()},
                            "adapter1", config_transmil())["out"][1:b.shape[0] + 1] for b in bags]
        P32 = [ref.transmil(torch.from_numpy(b), a1, "adapter1", config_transmil())["out"][1:b.shape[0] + 1]
               for b in bags]
    t, meta = run_case("moe", spec_moe(), a1, bags, labels, P64, P32)
    meta.update({"experts": str(E), "alpha": json.dumps(ALPHA), "expert_of_class": json.dumps(EOC)})
    write("moe", t, meta)

    # stage 2 from a frozen Dyn-MoE model file: the first seed whose Dyn-MoE decisions on the
    # cohort have float32-safe margins
    for mseed in range(12, 100):
        d = gt.Draw(mseed)
        model = dict(gt.transmil_weights(d, "adapter1", D, C, TAPS))
        for r in range(E):
            model[f"moe.router.{r}.weight"] = d.U((2, W), 1.0 / math.sqrt(W))
            gt.linear_init(d, model, f"moe.classifier.{r}", E, W)
        model.update(gt.transmil_weights(d, "adapter2", W, C, TAPS))
        margins = Margins()  # the cached (rho, Z) take the Dyn-MoE's decisions once, in float32
        with torch.no_grad():
            m64 = {k: v.double() for k, v in model.items()}
            c64 = [ref.forward(torch.from_numpy(b).double(), m64, config_model(), "paper") for b in bags]
        for f in c64:
            margins.moe(f["moe"])
        if margins.keep > MIN_KEEP_MARGIN and margins.rank > MIN_RANK_GAP:
            break
    ref.save_safetensors(os.path.join(out, "diffusion-init.safetensors"), model,
                         {"mexd.format": "mexd-model/1", "mexd.config": json.dumps(config_model())})
    with torch.no_grad():
        c32 = [ref.forward(torch.from_numpy(b), model, config_model(), "paper") for b in bags]
    cache64 = [(f["rho"], f["moe"]["z"]) for f in c64]
    cache32 = [(f["rho"], f["moe"]["z"]) for f in c32]
    t, meta = run_case("diffusion", spec_diffc(), {}, bags, labels, cache64, cache32, margins,
                       seeds=range(SEED, SEED + 50))
    meta.update({"T": str(T), "diffusion_width": str(FW), "model_seed": str(mseed)})
    write("diffusion", t, meta)


if __name__ == "__main__":
    main()
