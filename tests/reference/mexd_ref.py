#!/usr/bin/python3
"""Independent PyTorch reference of the MExD model of MEXD.md (§1 TransMIL, §2 Dyn-MoE, §3 Diff-C).

Float32, eval mode (no dropout).  Weights are a dict name -> torch.float32 tensor with the names of
docs/MODEL-FORMAT.md; the configuration is the dict of `mexd.config`.  Written from MEXD.md, not
from the C code; see README.md in this directory for the decisions.

Sorting: torch.sort(descending=True) on CPU in torch 1.13 is NOT stable for ties (tested: wrong
for n > 16, see test_ref.py::test_sort_stability); the reference therefore ranks with
torch.sort(..., descending=True, stable=True), i.e. ties go to the lower instance index, in both
`paper` and `official` mode (the C code does the same).
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F

LN_EPS = 1e-5

# ---------------------------------------------------------------------------------------------
# safetensors (plain Python; the `safetensors` package is not used)

_DT = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.int64): "I64",
       np.dtype(np.float64): "F64", np.dtype(np.float16): "F16"}
_NP = {v: k for k, v in _DT.items()}


def _np(a):
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.ascontiguousarray(a)


def save_safetensors(path, tensors, metadata=None):
    """tensors: ordered dict name -> numpy array or torch tensor; data stored in insertion order."""
    header = {}
    blobs = []
    off = 0
    for name, a in tensors.items():
        a = _np(a)
        if a.dtype not in _DT:
            raise ValueError(f"{name}: unsupported dtype {a.dtype}")
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DT[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **header}
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    """-> (dict name -> numpy array, in file order; metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (hl,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hl].decode())
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + hl
    out = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        dt = _NP[info["dtype"]].newbyteorder("<")
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[base + a:base + b], dtype=dt).reshape(info["shape"]).copy()
    return out, meta


def load_model(path):
    """-> (weights dict of torch tensors, config dict)."""
    t, meta = load_safetensors(path)
    if meta.get("mexd.format") != "mexd-model/1":
        raise ValueError(f"{path}: not a mexd-model/1 file")
    return {k: torch.from_numpy(v.astype(np.float32)) for k, v in t.items()}, json.loads(meta["mexd.config"])


# ---------------------------------------------------------------------------------------------
# §1 TransMIL with Nyström attention


def layer_norm(x, p, prefix):
    return F.layer_norm(x, (x.shape[-1],), p[prefix + ".weight"], p[prefix + ".bias"], LN_EPS)


def linear(x, p, prefix, bias=True):
    return F.linear(x, p[prefix + ".weight"], p[prefix + ".bias"] if bias else None)


def pinv_iter(a2, iters):
    """Newton-Schulz pseudo-inverse of a2 [H,m,m]; init scalar over the whole tensor."""
    absa = a2.abs()
    row_sums = absa.sum(dim=-1)  # [H,m]
    col_sums = absa.sum(dim=-2)  # [H,m]
    z = a2.transpose(-1, -2) / (torch.max(row_sums) * torch.max(col_sums))
    eye = torch.eye(a2.shape[-1], dtype=a2.dtype).unsqueeze(0)
    for _ in range(iters):
        xz = a2 @ z
        z = (0.25 * z) @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


def nystrom(x, p, prefix, cfg, assoc="right", trace=None):
    """x [n, W] -> [n, W].  assoc: 'right' = A1·(Z·(A3·v)) (MEXD.md), 'left' = (A1·Z)·(A3·v)."""
    n, W = x.shape
    H, m, iters, taps = cfg["heads"], cfg["landmarks"], cfg["pinv_iterations"], cfg["res_conv_taps"]
    dh = W // H
    if n % m != 0:
        x = torch.cat([torch.zeros(m - n % m, W, dtype=x.dtype), x], dim=0)  # zero rows in FRONT
    n_p = x.shape[0]
    qkv = F.linear(x, p[prefix + ".qkv.weight"])  # [n_p, 3W], no bias
    q, k, v = qkv[:, :W], qkv[:, W:2 * W], qkv[:, 2 * W:]
    q, k, v = (t.reshape(n_p, H, dh).transpose(0, 1) for t in (q, k, v))  # [H, n_p, dh]
    q = q * (dh ** -0.5)
    l = -(-n // m)  # ceil(n/m) with the UNPADDED n; n_p = m*l
    assert n_p == m * l
    ql = q.reshape(H, m, l, dh).sum(dim=2) / l
    kl = k.reshape(H, m, l, dh).sum(dim=2) / l
    a1 = torch.softmax(q @ kl.transpose(-1, -2), dim=-1)  # [H, n_p, m]
    a2 = torch.softmax(ql @ kl.transpose(-1, -2), dim=-1)  # [H, m, m]
    a3 = torch.softmax(ql @ k.transpose(-1, -2), dim=-1)  # [H, m, n_p]
    z = pinv_iter(a2, iters)
    if assoc == "right":
        out = a1 @ (z @ (a3 @ v))
    else:
        out = (a1 @ z) @ (a3 @ v)
    # per-head conv of v along the padded rows, same weights for all dh columns
    r = F.conv2d(v.unsqueeze(0), p[prefix + ".res_conv.weight"], padding=(taps // 2, 0), groups=H)[0]
    out = out + r
    out = out.transpose(0, 1).reshape(n_p, W)  # merge heads: channel h*dh + d
    out = linear(out, p, prefix + ".out")
    if trace is not None:
        trace.update(a1=a1, a2=a2, a3=a3, z=z, v=v)
    return out[-n:]


def square_side(n):
    s = math.isqrt(n)
    return s if s * s == n else s + 1


def ppeg(h, p, prefix, S):
    W = h.shape[1]
    cls, tok = h[:1], h[1:]
    g = tok.transpose(0, 1).reshape(1, W, S, S)  # token i -> row i // S, col i % S
    y = (F.conv2d(g, p[prefix + ".conv7.weight"], p[prefix + ".conv7.bias"], padding=3, groups=W) + g
         + F.conv2d(g, p[prefix + ".conv5.weight"], p[prefix + ".conv5.bias"], padding=2, groups=W)
         + F.conv2d(g, p[prefix + ".conv3.weight"], p[prefix + ".conv3.bias"], padding=1, groups=W))
    return torch.cat([cls, y.reshape(W, S * S).transpose(0, 1)], dim=0)


def transmil(x, p, prefix, cfg, assoc="right"):
    """x [N, in] -> dict h [N,W], layer1/ppeg/layer2/out [Np+1,W], logits [C], Np, S."""
    N = x.shape[0]
    W = cfg["width"]
    h0 = torch.relu(linear(x, p, prefix + ".fc1"))
    S = square_side(N)
    Np = S * S
    h = torch.cat([h0, h0[:Np - N]], dim=0)  # append the FIRST Np-N rows
    h = torch.cat([p[prefix + ".cls_token"].reshape(1, W), h], dim=0)
    l1 = h + nystrom(layer_norm(h, p, prefix + ".layer1.norm"), p, prefix + ".layer1.attn", cfg, assoc)
    pp = ppeg(l1, p, prefix + ".ppeg", S)
    l2 = pp + nystrom(layer_norm(pp, p, prefix + ".layer2.norm"), p, prefix + ".layer2.attn", cfg, assoc)
    out = layer_norm(l2, p, prefix + ".norm")
    logits = linear(out[0], p, prefix + ".head")
    return {"h": h0, "layer1": l1, "ppeg": pp, "layer2": l2, "out": out, "logits": logits, "Np": Np, "S": S}


def transmil_param_shapes(D, C, W=512, H=8, taps=33):
    """Shapes of one TransMIL(in=D, C) (MODEL-FORMAT names, prefix-free)."""
    s = {"fc1.weight": (W, D), "fc1.bias": (W,), "cls_token": (1, 1, W)}
    for L in ("layer1", "layer2"):
        s[f"{L}.norm.weight"] = (W,)
        s[f"{L}.norm.bias"] = (W,)
        s[f"{L}.attn.qkv.weight"] = (3 * W, W)
        s[f"{L}.attn.out.weight"] = (W, W)
        s[f"{L}.attn.out.bias"] = (W,)
        s[f"{L}.attn.res_conv.weight"] = (H, 1, taps, 1)
    for k in (7, 5, 3):
        s[f"ppeg.conv{k}.weight"] = (W, 1, k, k)
        s[f"ppeg.conv{k}.bias"] = (W,)
    s["norm.weight"] = (W,)
    s["norm.bias"] = (W,)
    s["head.weight"] = (C, W)
    s["head.bias"] = (C,)
    return s


# ---------------------------------------------------------------------------------------------
# §2 Dyn-MoE

# official balancing (MEXD.md §2 table): (if empty keep, if full drop); None, "<" or "<="
OFFICIAL_RULES = {
    2: [(None, None), ("<=", "<")],
    3: [("<", "<="), ("<", "<"), (None, "<")],
    4: [("<", "<="), ("<", "<"), ("<", "<"), (None, None)],
}


class ReferenceError_(Exception):
    """The reference itself fails on this input (the authors' code asserts)."""


def _cmp(rule, w, avg):
    return w < avg if rule == "<" else w <= avg


def _rank_desc(key):
    """Stable descending order (ties to the lower position)."""
    return torch.sort(key, descending=True, stable=True).indices


def dyn_moe(P, N, p, cfg, mode):
    """P [Np, W] = adapter #1's out[1..Np]; -> dict probs [E,R,2], sel (list of int64 tensors),
    zero_row flags, centroid [E,W], c [E], z [W], rows [M,W]."""
    E = cfg["experts"]
    alpha = cfg["alpha"]
    W = P.shape[1]
    R = N if mode == "paper" else P.shape[0]
    Pr = P[:R]
    probs = torch.stack([torch.softmax(F.linear(Pr, p[f"moe.router.{r}.weight"]), dim=-1) for r in range(E)])
    sels, blocks, cents, zero_rows, ranked = [], [], [], [], []
    for r in range(E):
        p0, p1 = probs[r, :, 0], probs[r, :, 1]
        keep = p1 > p0  # a tie is not kept
        if mode == "official":
            w = torch.maximum(p0, p1)  # this router's own max probability
            # average over all R rows: in double, rounded to float32 (a decision; see README)
            avg = torch.tensor(float(np.float32(float(w.double().mean()))), dtype=w.dtype)
            n = int(keep.sum())
            rule_empty, rule_full = OFFICIAL_RULES[E][r]
            if n == 0 and rule_empty:
                keep = _cmp(rule_empty, w, avg)
            elif n == R and rule_full:
                keep = keep & ~_cmp(rule_full, w, avg)
            n = int(keep.sum())
            if E == 2 and r == 1 and not (0 < n < R):
                raise ReferenceError_(
                    f"official E=2: the authors' code asserts 0 < n_1 < Np; n_1 = {n}, Np = {R}")
        idx = torch.nonzero(keep).flatten()  # ascending instance order
        n = idx.numel()
        g = p1
        if n == 0:
            if mode == "paper":
                sel = torch.nonzero(g == g.max()).flatten()[:1]  # largest g, first index on ties
                ranked.append((torch.sort(g, descending=True, stable=True).values, 1))
            else:
                sels.append(torch.zeros(0, dtype=torch.int64))
                ranked.append(None)
                zero_rows.append(True)
                blocks.append(torch.zeros(1, W))
                cents.append(torch.zeros(W))  # the zero row's mean
                continue
        else:
            k = int(n * float(alpha[r]))  # floor, computed in double like Python's int()
            if mode == "paper":
                order = idx[_rank_desc(g[idx])]
                sel = order if k == 0 else order[:k]  # k = 0: all, in rank order
                ranked.append((g[order], k if k else n))
            else:
                if k == 0:
                    sel = idx  # all, ascending instance order
                    ranked.append(None)
                else:
                    w0 = torch.maximum(probs[0, :, 0], probs[0, :, 1])  # ranked by router 0
                    order = idx[_rank_desc(w0[idx])]
                    sel = order[:k]
                    ranked.append((w0[order], k))
        zero_rows.append(False)
        sels.append(sel)
        if mode == "paper":
            gs = g[sel]
            rows = gs.unsqueeze(1) * P[sel]
            blocks.append(rows)
            cents.append(rows.sum(dim=0) / gs.sum())
        else:
            rows = P[sel]
            blocks.append(rows)
            cents.append(rows.mean(dim=0))
    cent = torch.stack(cents)
    c = torch.stack([torch.softmax(F.linear(cent[r], p[f"moe.classifier.{r}.weight"],
                                            p[f"moe.classifier.{r}.bias"]), dim=-1)[r] for r in range(E)])
    z = c[0] * cent[0]
    for r in range(1, E):
        z = z + c[r] * cent[r]
    return {"probs": probs, "sel": sels, "zero_row": zero_rows, "centroid": cent, "c": c, "z": z,
            "rows": torch.cat(blocks, dim=0), "ranked": ranked}


def min_rank_gap(ranked):
    """The smallest difference between consecutive ranking keys that decides the selection or
    its order (positions 0..k, k+1 included when present); inf when nothing is ranked."""
    if ranked is None:
        return float("inf")
    keys, k = ranked
    keys = keys[:k + 1].double()
    if keys.numel() < 2:
        return float("inf")
    return float((keys[:-1] - keys[1:]).min())


def forward(x, p, cfg, mode):
    """The stage-1 forward of one bag x [N, D]: dict of the fixture intermediates (torch tensors)."""
    N = x.shape[0]
    a1 = transmil(x, p, "adapter1", cfg)
    P = a1["out"][1:]
    moe = dyn_moe(P, N, p, cfg, mode)
    a2 = transmil(moe["rows"], p, "adapter2", cfg)
    rho = torch.softmax(a2["logits"], dim=-1)
    return {"a1": a1, "moe": moe, "a2": a2, "rho": rho}


# ---------------------------------------------------------------------------------------------
# §3 Diff-C


def schedule(T=1000, beta_start=1e-4, beta_end=0.02):
    """beta, alpha, alpha_bar in float64."""
    t = np.arange(T, dtype=np.float64)
    beta = beta_start + (beta_end - beta_start) * t / (T - 1)
    alpha = 1.0 - beta
    abar = np.cumprod(alpha)
    return beta, alpha, abar


def denoiser(p, z, rho, f, t):
    """eps [S,C] = eps_theta(Z, f, rho, t) for f [S,C], z [W], rho [C]; t an int (every row), or
    an int64 tensor [S] of one index per row (the training batch, gen_train.py): the embed rows
    Emb[t] then broadcast row by row."""
    S = f.shape[0]
    x = torch.cat([f, rho.reshape(1, -1).expand(S, -1)], dim=1)
    h = p["diffc.cl1.embed"][t] * linear(x, p, "diffc.cl1")
    h = F.softplus(layer_norm(h, p, "diffc.norm1"))
    hz = layer_norm(linear(z, p, "diffc.z"), p, "diffc.norm_z")
    h = h * hz
    h = F.softplus(layer_norm(p["diffc.cl2.embed"][t] * linear(h, p, "diffc.cl2"), p, "diffc.norm2"))
    h = F.softplus(layer_norm(p["diffc.cl3.embed"][t] * linear(h, p, "diffc.cl3"), p, "diffc.norm3"))
    return linear(h, p, "diffc.out")


def _f32(v):
    return torch.tensor(float(np.float32(v)), dtype=torch.float32)


def f0_coefs(A):
    sA = math.sqrt(A)
    return _f32(1.0 / sA), _f32(-(1.0 - sA) / sA), _f32(-math.sqrt(1.0 - A) / sA)


def f0_hat(f, rho, eps, A):
    c0, c1, c2 = f0_coefs(A)
    return c0 * f + c1 * rho + c2 * eps


def card_coefs(alpha, abar, t):
    a, A, Ap = alpha[t], abar[t], abar[t - 1]
    g0 = (1 - a) * math.sqrt(Ap) / (1 - A)
    g1 = (1 - Ap) * math.sqrt(a) / (1 - A)
    g2 = 1 + (math.sqrt(A) - 1) * (math.sqrt(a) + math.sqrt(Ap)) / (1 - A)
    sigma = math.sqrt((1 - Ap) / (1 - A) * (1 - a))
    return g0, g1, g2, sigma


def card_step(p, z, rho, f, t, noise, sched):
    """One ancestral step from index t >= 1 to t-1: -> (f0_hat, f_new)."""
    _, alpha, abar = sched
    eps = denoiser(p, z, rho, f, t)
    f0 = f0_hat(f, rho, eps, abar[t])
    g0, g1, g2, sigma = (_f32(v) for v in card_coefs(alpha, abar, t))
    return f0, g0 * f0 + g1 * f + g2 * rho + sigma * noise


def ddim_index(i, K, T):
    return (2 * i * (T - 1) + (K - 1)) // (2 * (K - 1))


def ddim_coefs(abar, t, s, eta):
    A, B = abar[t], abar[s]
    sigma = eta * math.sqrt((1 - B) / (1 - A)) * math.sqrt(1 - A / B)
    return math.sqrt(B), 1 - math.sqrt(B), math.sqrt(1 - B - sigma * sigma), sigma


def ddim_step(p, z, rho, f, t, s, noise, sched, eta=0.0):
    _, _, abar = sched
    eps = denoiser(p, z, rho, f, t)
    f0 = f0_hat(f, rho, eps, abar[t])
    k0, k1, k2, sigma = (_f32(v) for v in ddim_coefs(abar, t, s, eta))
    fn = k0 * f0 + k1 * rho + k2 * eps
    if eta != 0.0:
        fn = fn + sigma * noise
    return f0, fn


def sample(p, z, rho, chains, seed, sched, steps=0, eta=0.0, noise_fn=None):
    """CARD (steps <= 0, T denoiser calls) or DDIM with `steps` = K >= 2 indices. -> f0 [S,C]."""
    import philox
    noise_fn = noise_fn or (lambda t: torch.from_numpy(philox.noise(seed, t, chains, rho.numel())))
    T = len(sched[0])
    if steps <= 0:
        f = rho.reshape(1, -1) + noise_fn(T)
        for t in range(T - 1, 0, -1):
            _, f = card_step(p, z, rho, f, t, noise_fn(t), sched)
    else:
        K = steps
        f = rho.reshape(1, -1) + noise_fn(K)
        for i in range(K - 1, 0, -1):
            t, s = ddim_index(i, K, T), ddim_index(i - 1, K, T)
            _, f = ddim_step(p, z, rho, f, t, s, noise_fn(i) if eta != 0.0 else None, sched, eta)
    eps = denoiser(p, z, rho, f, 0)
    return f0_hat(f, rho, eps, sched[2][0])


def readout(f0):
    """-> (probs [C], spread [C]): q = softmax(-(f0-1)^2) per chain; mean and population std."""
    q = torch.softmax(-(f0 - 1.0) ** 2, dim=1)
    return q.mean(dim=0), q.std(dim=0, unbiased=False)
