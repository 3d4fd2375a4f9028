#!/usr/bin/python3
"""results_table.py ROOT: the table of docs/RESULTS.md from bench/results.sh's eval files.

For each cohort (2 and 3 classes) and model, ACC / AUC / macro-F1 on the test split as
mean ± sample standard deviation over the seeds found (ROOT/c{C}-s{seed}/eval-{model}.json,
written by `mexd eval --json`), then each seed's AUC (ACC).  A partial or undefined AUC is
flagged.
"""
import glob
import json
import os
import re
import statistics
import sys

MODELS = [("abmil", "ABMIL"), ("transmil", "TransMIL"), ("moe", "Dyn-MoE alone (ρ)"),
          ("mexd", "MExD (Diff-C)"), ("mexd-norouting", "ablation: no routing"),
          ("mexd-noise", "ablation: diffusion from pure noise")]


def fmt(vals):
    if not vals:
        return "–"
    m = statistics.mean(vals)
    s = statistics.stdev(vals) if len(vals) > 1 else float("nan")
    return f"{m:.3f} ± {s:.3f}" if len(vals) > 1 else f"{m:.3f}"


def load(path):
    """One run's `mexd eval --json`, or None where the run has not been evaluated."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main(root):
    for C in (2, 3):
        seeds = sorted({int(re.search(r"-s(\d+)$", d).group(1))
                        for d in glob.glob(os.path.join(root, f"c{C}-s*")) if os.path.isdir(d)})
        if not seeds:
            continue
        print(f"\n{C} classes, seeds {', '.join(map(str, seeds))} (test split)\n")
        print("| model | ACC | AUC | macro-F1 | runs |")
        print("|---|---|---|---|---|")
        runs = {(key, s): load(os.path.join(root, f"c{C}-s{s}", f"eval-{key}.json"))
                for key, _ in MODELS for s in seeds}
        for key, label in MODELS:
            acc, auc, f1, flags = [], [], [], set()
            for m in (runs[key, s] for s in seeds):
                if m is None:
                    continue
                acc.append(m["accuracy"])
                f1.append(m["macro_f1"])
                if m["auc"] is None:
                    flags.add("undefined AUC")
                else:
                    auc.append(m["auc"])
                if m["auc_status"] == "partial":
                    flags.add("partial AUC")
            note = f" ({', '.join(sorted(flags))})" if flags else ""
            print(f"| {label} | {fmt(acc)} | {fmt(auc)} | {fmt(f1)} | {len(acc)}{note} |")
        # each run on its own: with test splits of 18 / 27 slides the spread is the story
        print(f"\nper seed, {C} classes: test AUC (ACC)\n")
        print("| model | " + " | ".join(f"seed {s}" for s in seeds) + " |")
        print("|---|" + "---|" * len(seeds))
        for key, label in MODELS:
            cells = []
            for m in (runs[key, s] for s in seeds):
                if m is None:
                    cells.append("–")
                    continue
                a = "undef." if m["auc"] is None else f"{m['auc']:.3f}"
                cells.append(f"{a} ({m['accuracy']:.3f})")
            print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
