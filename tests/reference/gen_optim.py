#!/usr/bin/python3
"""Fixtures for the optimizers of lib/train/optim.c: PyTorch (Debian's torch 1.13) computes them.

    /usr/bin/python3 tests/reference/gen_optim.py tests/fixtures/optim

Writes
  inputs.json   the parameters (names, shapes, initial values) and STEPS gradient sets
  <case>.json   one optimizer: its settings and the parameters after every step
  clip.json     torch.nn.utils.clip_grad_norm_ on each gradient set, for several max_norm

Arrays are base64 of little-endian float32 (exact), flattened row-major; a parameter list is the
parameters one after the other in the order of inputs.json.

Optimizers (all single-tensor code paths, foreach=False, which is 1.13's default anyway):
  torch.optim.Adam (with and without its coupled L2 weight_decay), torch.optim.AdamW;
  torch.optim.RAdam, and RAdam with decoupled weight decay the way torch 2.x's
  RAdam(decoupled_weight_decay=True) does it: after the step counter is incremented and before the
  moments, param.mul_(1 - lr * weight_decay).  1.13 has no such flag, so RAdamDecoupled below calls
  1.13's RAdam with weight_decay=0 and multiplies the parameters first; the moments do not read the
  parameters, so this is the same sequence of float32 operations.  (torch 2.x also moved exp_avg's
  update from mul_(beta1).add_(grad, alpha=1-beta1) to lerp_(grad, 1-beta1), which rounds
  differently in the last bit; the fixtures and the C code use 1.13's form.)
  Lookahead: timm's timm/optim/lookahead.py (identical in timm 0.4 to 1.0): every k inner steps
  slow += alpha * (fast - slow); fast = slow, where the slow weights are created lazily *at the
  first sync* as a copy of the fast weights, so that first sync changes nothing.  LookaheadInit is
  the paper's variant (slow weights copied from the parameters when the wrapper is created).
  clip+adam: clip_grad_norm_(max_norm 1.0) on each gradient set, then Adam (MEXD.md stage 2).

STEPS = 14 covers RAdam's un-rectified steps 1..5 (rho_t <= 5) and rectified steps 6.. and, with
k = 6, Lookahead syncs after steps 6 and 12.
"""
import base64
import json
import math
import os
import sys

import numpy as np
import torch

STEPS = 14
# Parameters: shapes, and the scale of their gradients.  "tiny" has gradients around 1e-6, where
# eps = 1e-8 is 1% of sqrt(v) and the result depends on where eps is added.
SHAPES = [("w", [4, 3], 1.0), ("b", [5], 0.3), ("conv.weight", [2, 2, 3], 3.0), ("tiny", [4], 1e-6),
          ("s", [1], 1.0)]


def b64(t):
    a = t.detach().contiguous().numpy().astype("<f4", copy=False).reshape(-1)
    return base64.b64encode(a.tobytes()).decode()


def flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts])


class RAdamDecoupled(torch.optim.RAdam):
    """torch 2.x RAdam(decoupled_weight_decay=True) on torch 1.13 (see the module comment)."""

    def __init__(self, params, lr, betas, eps, weight_decay):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=0, foreach=False)
        self.dwd = weight_decay

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and self.dwd != 0:
                    p.mul_(1 - group["lr"] * self.dwd)
        return super().step(closure)


class Lookahead:
    """timm.optim.Lookahead's algorithm (update_slow / step), without the Optimizer plumbing."""

    def __init__(self, base, alpha=0.5, k=6, init_at_creation=False):
        self.base, self.alpha, self.k = base, alpha, k
        self.lookahead_step = 0
        self.slow = {}
        if init_at_creation:
            for group in base.param_groups:
                for p in group["params"]:
                    self.slow[p] = p.detach().clone()

    @torch.no_grad()
    def update_slow(self):
        for group in self.base.param_groups:
            for fast_p in group["params"]:
                if fast_p.grad is None:
                    continue
                if fast_p not in self.slow:
                    self.slow[fast_p] = torch.empty_like(fast_p)
                    self.slow[fast_p].copy_(fast_p)
                slow = self.slow[fast_p]
                slow.add_(fast_p - slow, alpha=self.alpha)
                fast_p.copy_(slow)

    def step(self):
        self.base.step()
        self.lookahead_step += 1
        if self.lookahead_step % self.k == 0:
            self.update_slow()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "optim")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(20260214)
    init = [torch.randn(shape) for _, shape, _ in SHAPES]
    grads = []
    for s in range(STEPS):
        # per-step factors so that the total norm is sometimes below and sometimes above 1
        f = [0.05, 0.4, 1.0, 2.0, 0.08, 1.5, 0.7, 3.0, 0.12, 1.0, 0.3, 2.5, 0.9, 0.02][s]
        g = [torch.randn(shape) * scale * f for _, shape, scale in SHAPES]
        if s == 3:
            g[0][1, :] = 0  # a row with exactly zero gradient
        grads.append(g)

    with open(os.path.join(out, "inputs.json"), "w") as fp:
        json.dump({"steps": STEPS,
                   "params": [{"name": n, "shape": sh, "init": b64(t)}
                              for (n, sh, _), t in zip(SHAPES, init)],
                   "grads": [b64(flat(g)) for g in grads]}, fp, indent=1)
        fp.write("\n")

    def run(name, cfg, make):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = make(params)
        after = []
        for s in range(STEPS):
            for p, g in zip(params, grads[s]):
                p.grad = g.clone()
            if cfg.get("clip"):
                torch.nn.utils.clip_grad_norm_(params, cfg["clip"])
            opt.step()
            after.append(b64(flat(params)))
        with open(os.path.join(out, name + ".json"), "w") as fp:
            json.dump({"optimizer": cfg, "after": after}, fp, indent=1)
            fp.write("\n")

    def adam(lr, wd=0.0, betas=(0.9, 0.999), eps=1e-8):
        return lambda ps: torch.optim.Adam(ps, lr=lr, betas=betas, eps=eps, weight_decay=wd,
                                           foreach=False)

    def cfg(kind, lr, wd=0.0, decoupled=False, betas=(0.9, 0.999), eps=1e-8, **extra):
        c = {"kind": kind, "lr": lr, "beta1": betas[0], "beta2": betas[1], "eps": eps,
             "weight_decay": wd, "decoupled": decoupled}
        c.update(extra)
        return c

    run("adam", cfg("adam", 1e-2), adam(1e-2))
    run("adam-wd", cfg("adam", 1e-2, wd=0.1, betas=(0.8, 0.99), eps=1e-6),
        adam(1e-2, wd=0.1, betas=(0.8, 0.99), eps=1e-6))
    run("adamw", cfg("adam", 1e-2, wd=0.5, decoupled=True),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.5, foreach=False))
    run("clip-adam", cfg("adam", 1e-3, clip=1.0), adam(1e-3))
    run("radam", cfg("radam", 1e-2),
        lambda ps: torch.optim.RAdam(ps, lr=1e-2, foreach=False))
    run("radam-l2", cfg("radam", 1e-2, wd=0.1),
        lambda ps: torch.optim.RAdam(ps, lr=1e-2, weight_decay=0.1, foreach=False))
    run("radam-dwd", cfg("radam", 1e-2, wd=0.5, decoupled=True),
        lambda ps: RAdamDecoupled(ps, 1e-2, (0.9, 0.999), 1e-8, 0.5))
    run("lookahead-radam", cfg("radam", 1e-2, wd=0.5, decoupled=True, lookahead_k=6,
                               lookahead_alpha=0.5, lookahead_init="timm"),
        lambda ps: Lookahead(RAdamDecoupled(ps, 1e-2, (0.9, 0.999), 1e-8, 0.5), 0.5, 6))
    # MEXD.md §4's stage 0/1 settings exactly
    run("lookahead-radam-mexd", cfg("radam", 2e-4, wd=1e-5, decoupled=True, lookahead_k=6,
                                    lookahead_alpha=0.5, lookahead_init="timm"),
        lambda ps: Lookahead(RAdamDecoupled(ps, 2e-4, (0.9, 0.999), 1e-8, 1e-5), 0.5, 6))
    run("lookahead-init-adam", cfg("adam", 2e-2, lookahead_k=4, lookahead_alpha=0.3,
                                   lookahead_init="creation"),
        lambda ps: Lookahead(torch.optim.Adam(ps, lr=2e-2, foreach=False), 0.3, 4, True))

    # RAdam's rectification switches on at step 6 with beta2 = 0.999 (rho_t > 5)
    rho_inf = 2 / (1 - 0.999) - 1
    rho = [rho_inf - 2 * t * 0.999 ** t / (1 - 0.999 ** t) for t in range(1, STEPS + 1)]
    assert all(r <= 5 for r in rho[:5]) and all(r > 5 for r in rho[5:]), rho

    clip = []
    for s in range(STEPS):
        for max_norm in (1.0, 0.25, 100.0):
            g = [t.clone() for t in grads[s]]
            params = [torch.nn.Parameter(torch.zeros_like(t)) for t in g]
            for p, t in zip(params, g):
                p.grad = t
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            clip.append({"step": s, "max_norm": max_norm, "norm": float(norm),
                         "norm64": math.sqrt(sum(float((t.double() ** 2).sum())
                                                 for t in grads[s])),
                         "grads": b64(flat([p.grad for p in params]))})
    # the boundary: max_norm equal to the norm still scales, by max_norm / (norm + 1e-6)
    g = [t.clone() for t in grads[2]]
    params = [torch.nn.Parameter(torch.zeros_like(t)) for t in g]
    for p, t in zip(params, g):
        p.grad = t
    n = float(torch.nn.utils.clip_grad_norm_(params, 1e9))
    for p, t in zip(params, grads[2]):
        p.grad = t.clone()
    torch.nn.utils.clip_grad_norm_(params, n)
    clip.append({"step": 2, "max_norm": n, "norm": n,
                 "norm64": math.sqrt(sum(float((t.double() ** 2).sum()) for t in grads[2])),
                 "grads": b64(flat([p.grad for p in params]))})
    with open(os.path.join(out, "clip.json"), "w") as fp:
        json.dump({"cases": clip}, fp, indent=1)
        fp.write("\n")


if __name__ == "__main__":
    main()
