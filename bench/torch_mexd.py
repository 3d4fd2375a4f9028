#!/usr/bin/python3
"""torch_mexd.py: the PyTorch figure beside `mexd bench mexd` (docs/PERFORMANCE.md).

Times the project's PyTorch reference (tests/reference/mexd_ref.py: MEXD.md written out in
PyTorch, paper mode) at the paper's sizes with random weights: adapter #1 + Dyn-MoE + adapter #2
for one bag of N instances, and the 1000-step CARD sampling of S chains, fp32 with TF32 off.

    /usr/bin/python3 bench/torch_mexd.py [--device cpu|cuda] [--n 10000] [--dim 768] [--chains 32]
                                         [--reps 3]
Prints one JSON line (medians over the timed runs, after one warm-up)."""
import argparse, json, os, statistics, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import torch  # noqa: E402
import mexd_ref as ref  # noqa: E402


def random_model(D, C, E, W=512, H=8, F=512, T=1000, device="cpu"):
    g = torch.Generator().manual_seed(7)
    p = {}

    def u(shape, scale):
        return (torch.rand(shape, generator=g) * 2 - 1) * scale

    for prefix, ind in (("adapter1", D), ("adapter2", W)):
        for name, shape in ref.transmil_param_shapes(ind, C, W, H).items():
            if name.endswith("norm.weight"):
                v = torch.ones(shape)
            elif name.endswith("norm.bias"):
                v = torch.zeros(shape)
            else:
                fan = shape[1] if len(shape) == 2 else (max(1, shape[-1] * shape[-2]) if len(shape) > 1 else shape[0])
                v = u(shape, 1.0 / fan ** 0.5)
            p[f"{prefix}.{name}"] = v
    for r in range(E):
        p[f"moe.router.{r}.weight"] = u((2, W), W ** -0.5)
        p[f"moe.classifier.{r}.weight"] = u((E, W), W ** -0.5)
        p[f"moe.classifier.{r}.bias"] = u((E,), W ** -0.5)
    for k, (o, i) in enumerate(((F, 2 * C), (F, F), (F, F)), 1):
        p[f"diffc.cl{k}.weight"] = u((o, i), i ** -0.5)
        p[f"diffc.cl{k}.bias"] = u((o,), i ** -0.5)
        p[f"diffc.cl{k}.embed"] = torch.rand((T + 1, F), generator=g)
        p[f"diffc.norm{k}.weight"] = torch.ones(F)
        p[f"diffc.norm{k}.bias"] = torch.zeros(F)
    p["diffc.z.weight"] = u((F, W), W ** -0.5)
    p["diffc.z.bias"] = u((F,), W ** -0.5)
    p["diffc.norm_z.weight"] = torch.ones(F)
    p["diffc.norm_z.bias"] = torch.zeros(F)
    p["diffc.out.weight"] = u((C, F), F ** -0.5)
    p["diffc.out.bias"] = u((C,), F ** -0.5)
    cfg = {"feature_dim": D, "width": W, "heads": H, "landmarks": 256, "pinv_iterations": 6,
           "res_conv_taps": 33, "classes": [f"c{i}" for i in range(C)], "experts": E,
           "alpha": [0.25, 0.5] if E == 2 else [0.5] * E, "expert_of_class": list(range(C))}
    return {k: v.to(device) for k, v in p.items()}, cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--chains", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch.set_num_threads (0: every core this process may use; PyTorch's own "
                         "default counts physical cores, 1 on this 2-vCPU machine)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads if a.threads > 0 else len(os.sched_getaffinity(0)))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(a.device)
    p, cfg = random_model(a.dim, 2, 2, device=dev)
    x = (torch.rand((a.n, a.dim), generator=torch.Generator().manual_seed(11)) * 2 - 1).to(dev)
    sched = ref.schedule()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    t_fwd, t_smp = [], []
    with torch.no_grad():
        for r in range(a.reps + 1):
            sync()
            t0 = time.perf_counter()
            out = ref.forward(x, p, cfg, "paper")
            sync()
            t1 = time.perf_counter()
            noise = torch.randn((len(sched[0]) + 1, a.chains, 2), device=dev)
            ref.sample(p, out["moe"]["z"], out["rho"], a.chains, 0, sched, noise_fn=lambda t: noise[t])
            sync()
            t2 = time.perf_counter()
            if r > 0:
                t_fwd.append((t1 - t0) * 1e3)
                t_smp.append((t2 - t1) * 1e3)
    print(json.dumps({"bench": "torch-mexd-reference", "device": str(dev), "torch": torch.__version__,
                      "n": a.n, "dim": a.dim, "chains": a.chains, "threads": torch.get_num_threads(),
                      "ms_stage1": round(statistics.median(t_fwd), 2),
                      "ms_card_1000": round(statistics.median(t_smp), 2), "reps": a.reps}))


if __name__ == "__main__":
    main()
