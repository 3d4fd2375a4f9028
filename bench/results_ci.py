#!/usr/bin/python3
"""results_ci.py ROOT [--boot B]: the table of docs/RESULTS.md for the preset cohorts (issue 19),
with intervals, from bench/results-presets.sh's runs (ROOT/PRESET/sSEED/pred-MODEL.csv: the
per-slide probabilities `mexd eval --out` wrote; eval-MODEL.json: its metrics).

For each preset and model, over the training seeds found:
  AUC     the mean over seeds of the test AUC (binary, or one-vs-rest macro for 3 classes: the
          AUC `mexd eval` reports, checked here against scikit-learn's on the same file), with a
          95 % interval from a two-level bootstrap: each of B resamples draws the seeds with
          replacement and, independently, the test slides with replacement (the same slides for
          every seed and model of that resample), and takes the mean AUC; percentile interval.
          So the interval holds the training randomness and the finite test set together.
  per seed  each run's AUC with its own 95 % interval over the test slides alone.
  ACC     the mean accuracy over seeds.
Paired differences (model − reference) use the same resamples for both models, so that what the
two share (the slides, the seed's split of train and validation) cancels; an interval that
excludes 0 is a difference this benchmark can see.  Resamples that miss a class are drawn again.
"""
import csv
import glob
import json
import os
import re
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

PRESETS = ["camelyon16-like", "bracs-like"]
MODELS = [("abmil", "ABMIL"), ("transmil", "TransMIL"), ("moe", "Dyn-MoE alone (ρ)"),
          ("mexd", "MExD (Diff-C)"), ("mexd-norouting", "ablation: no routing"),
          ("mexd-noise", "ablation: diffusion from pure noise")]
PAIRS = [("mexd", "transmil"), ("mexd", "abmil"), ("transmil", "abmil"), ("mexd", "moe"),
         ("mexd", "mexd-norouting"), ("mexd", "mexd-noise")]


def auc(y, p):
    if p.shape[1] == 2:
        return roc_auc_score(y, p[:, 1])
    return roc_auc_score(y, p, multi_class="ovr", labels=list(range(p.shape[1])))


def read_pred(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in rows[0] if c.startswith("p_")]
    classes = [c[2:] for c in cols]
    ids = [r["slide_id"] for r in rows]
    y = np.array([classes.index(r["label"]) for r in rows])
    p = np.array([[float(r[c]) for c in cols] for r in rows])
    return ids, y, p


def main(root, B):
    rng = np.random.default_rng(19)
    for preset in PRESETS:
        seeds = sorted(int(re.search(r"/s(\d+)$", d).group(1))
                       for d in glob.glob(os.path.join(root, preset, "s*")) if os.path.isdir(d))
        runs = {}  # (model, seed) -> (y, p) aligned on the slide order of the first run
        order = None
        for key, _ in MODELS:
            for s in seeds:
                path = os.path.join(root, preset, f"s{s}", f"pred-{key}.csv")
                ej = os.path.join(root, preset, f"s{s}", f"eval-{key}.json")
                if not (os.path.exists(path) and os.path.exists(ej)):
                    continue
                ids, y, p = read_pred(path)
                if order is None:
                    order = ids
                if sorted(ids) != sorted(order):
                    sys.exit(f"{path}: not the test slides of the other runs")
                idx = [ids.index(i) for i in order]
                y, p = y[idx], p[idx]
                with open(ej) as f:
                    e = json.load(f)
                a = auc(y, p)
                if e.get("auc") is not None and abs(a - e["auc"]) > 1e-6:
                    sys.exit(f"{ej}: AUC {e['auc']} but scikit-learn gives {a} on {path}")
                runs[key, s] = (y, p, e["accuracy"])
        if not runs:
            continue
        y = next(iter(runs.values()))[0]
        n, k = len(y), len(np.unique(y))
        # the resamples: seeds and slides, shared by every model
        res = []
        while len(res) < B:
            sl = rng.integers(0, n, n)
            if len(np.unique(y[sl])) == k:
                res.append((rng.integers(0, len(seeds), len(seeds)), sl))
        boot = {}
        for key, _ in MODELS:
            have = [s for s in seeds if (key, s) in runs]
            if len(have) != len(seeds):
                continue
            per = np.array([[auc(y[sl], runs[key, s][1][sl]) for s in seeds] for _, sl in res])
            boot[key] = np.array([per[b, ss].mean() for b, (ss, _) in enumerate(res)])
        print(f"\n### {preset}: {n} test slides, training seeds {', '.join(map(str, seeds))}, "
              f"{B} bootstrap resamples\n")
        print("| model | test AUC, mean over seeds [95 % interval] | ACC (mean) | runs |")
        print("|---|---|---|---|")
        for key, label in MODELS:
            done = [s for s in seeds if (key, s) in runs]
            if not done:
                print(f"| {label} | – | – | 0 |")
                continue
            m = np.mean([auc(y, runs[key, s][1]) for s in done])
            acc = np.mean([runs[key, s][2] for s in done])
            ci = (f" [{np.percentile(boot[key], 2.5):.3f}, {np.percentile(boot[key], 97.5):.3f}]"
                  if key in boot else " (not all seeds yet)")
            print(f"| {label} | {m:.3f}{ci} | {acc:.3f} | {len(done)} |")
        print("\nper seed: test AUC [95 % interval over the test slides]\n")
        print("| model | " + " | ".join(f"seed {s}" for s in seeds) + " |")
        print("|---|" + "---|" * len(seeds))
        for key, label in MODELS:
            cells = []
            for s in seeds:
                if (key, s) not in runs:
                    cells.append("–")
                    continue
                p = runs[key, s][1]
                v = np.array([auc(y[sl], p[sl]) for _, sl in res[:1000]])
                cells.append(f"{auc(y, p):.3f} [{np.percentile(v, 2.5):.3f}, "
                             f"{np.percentile(v, 97.5):.3f}]")
            print(f"| {label} | " + " | ".join(cells) + " |")
        print("\npaired differences of test AUC (mean over seeds) [95 % interval]\n")
        print("| difference | value [95 % interval] |")
        print("|---|---|")
        names = dict(MODELS)
        for a, b in PAIRS:
            if a not in boot or b not in boot:
                continue
            d = boot[a] - boot[b]
            m = np.mean([auc(y, runs[a, s][1]) - auc(y, runs[b, s][1]) for s in seeds])
            print(f"| {names[a]} − {names[b]} | {m:+.3f} [{np.percentile(d, 2.5):+.3f}, "
                  f"{np.percentile(d, 97.5):+.3f}] |")


if __name__ == "__main__":
    args = sys.argv[1:]
    B = 2000
    if "--boot" in args:
        i = args.index("--boot")
        B = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    main(args[0], B)
