#!/usr/bin/python3
"""uncertainty_table.py ROOT [--figures DIR]: the tables of docs/RESULTS.md's risk–coverage and
calibration section from what bench/uncertainty.sh left in ROOT/PRESET/sSEED/ (unc-test-MODEL.json,
unc-cal-MODEL.json, unc-pred-MODEL.csv) for TransMIL, Dyn-MoE (ρ) and MExD (Diff-C).

Per cohort: a summary over the training seeds (mean [min, max over seeds]) of the test ECE
before → after the temperature fitted on the validation split, and of the risk–coverage (AURC
ranked by the top-class probability and, for MExD, by the spread of the chains; the accuracy on
the most certain 80 % and 90 %); the paired differences (ECE after − before, AURC spread −
confidence) are the mean over seeds with a 95 % interval from 1,000 bootstrap resamples of the
test slides, the same resample for every seed (the seeds share the cohort and its test split),
so the interval covers the slides, not the training seeds.  Then one table per model, a row per
seed, with mexd's own per-seed 95 % intervals (1,000 bootstrap resamples of the slides).

--figures DIR: copies seed 1's reliability diagrams (`mexd eval --reliability` of the calibrated
model file: the probabilities before the temperature on the left, after it on the right) to
DIR/reliability-PRESET-MODEL.png.  numpy only."""
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np

PRESETS = ["camelyon16-like", "bracs-like"]
MODELS = [("transmil", "TransMIL"), ("moe", "Dyn-MoE ρ"), ("mexd", "MExD (Diff-C)")]
BINS = 15
BOOT = 1000
T_LO, T_HI = 0.05, 20.0  # mexd_fit_temperature's search interval


def load_pred(path):
    """slide ids, probabilities (n × C), labels, spread (or None) of a predictions CSV."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    ids = [r["slide_id"] for r in rows]
    p = np.array([[float(r["p_" + c]) for c in classes] for r in rows])
    y = np.array([classes.index(r["label"]) for r in rows])
    s = np.array([float(r["spread"]) for r in rows]) if "spread" in rows[0] else None
    return ids, p, y, s


def temper(p, t):
    """mexd_probs_temperature: softmax(log p / T)."""
    z = np.log(np.maximum(p, 1e-12)) / t
    z -= z.max(axis=1, keepdims=True)
    q = np.exp(z)
    return q / q.sum(axis=1, keepdims=True)


def calibration(p, y):
    """mexd_calibration_compute: per-bin count, mean confidence, accuracy and the top-label ECE."""
    pred = p.argmax(axis=1)
    conf = p[np.arange(len(p)), pred]
    right = pred == y
    b = np.clip(np.ceil(conf * BINS).astype(int) - 1, 0, BINS - 1)
    count = np.bincount(b, minlength=BINS)
    sc = np.bincount(b, conf, BINS)
    sr = np.bincount(b, right.astype(float), BINS)
    ece = np.abs(sr - sc).sum() / len(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, sc / count, sr / count, ece


def aurc(score, right):
    """mexd_risk_coverage's AURC: slides by descending score, ties sharing their error rate."""
    order = np.argsort(-score, kind="stable")
    s, r = score[order], ~right[order]
    n = len(s)
    area, before, a = 0.0, 0.0, 0
    while a < n:
        b = a + 1
        while b < n and s[b] == s[a]:
            b += 1
        rate = r[a:b].sum() / (b - a)
        k = np.arange(a + 1, b + 1)
        area += ((before + (k - a) * rate) / k).sum()
        before += r[a:b].sum()
        a = b
    return area / n


def fmt(x, d=3):
    return "–" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def sfmt(x, d=3):
    return f"{x:+.{d}f}"


def span(xs, d=3):
    """mean [min, max] over seeds"""
    xs = np.asarray(xs, float)
    return f"{fmt(xs.mean(), d)} [{fmt(xs.min(), d)}, {fmt(xs.max(), d)}]"


def ival(x, iv, d=3):
    return f"{fmt(x, d)} [{fmt(iv[0], d)}, {fmt(iv[1], d)}]"


def selective(js, by):
    for s in js["selective"]:
        if s["ranked_by"] == by:
            return s
    return None


def cohort(root, preset, figures):
    seeds = sorted(int(d.name[1:]) for d in (root / preset).glob("s[0-9]*")
                   if (d / "unc-test-mexd.json").exists())
    if not seeds:
        return
    rng = np.random.default_rng(19)
    first = json.loads((root / preset / f"s{seeds[0]}" / "unc-test-mexd.json").read_text())
    val = json.loads((root / preset / f"s{seeds[0]}" / "unc-val-mexd.json").read_text())
    n = first["n"]
    idx = rng.integers(0, n, size=(BOOT, n))  # the slide resamples, shared by seeds and models
    print(f"## {preset}: {n} test slides, training seeds {', '.join(map(str, seeds))}\n")
    print(f"The temperature (and MExD's referral spread, keeping 90 % of the slides) is fitted on "
          f"the validation split each training carved ({val['n']} slides, `--val-fraction 0.2 "
          f"--seed S`); ECE and the risk–coverage are on the test split.  Mean over seeds "
          f"[min, max over seeds]; Δ: the mean paired difference over seeds with a 95 % "
          f"interval from {BOOT} bootstrap resamples of the test slides.\n")
    rows, detail = [], {}
    for m, title in MODELS:
        per = []
        for s in seeds:
            d = root / preset / f"s{s}"
            js = json.loads((d / f"unc-test-{m}.json").read_text())
            ids, p, y, sp = load_pred(d / f"unc-pred-{m}.csv")
            cal = js["calibration"]
            t = cal["temperature"]
            q = temper(p, t)
            # the predictions CSV must give back what mexd reported (same probabilities)
            c0, c1 = calibration(p, y)[3], calibration(q, y)[3]
            pred = p.argmax(axis=1)
            right = pred == y
            conf = p[np.arange(n), pred]
            a_conf = aurc(conf, right)
            assert abs(c0 - cal["ece"]) < 1e-6 and abs(c1 - cal["ece_calibrated"]) < 1e-6, (d, m)
            assert abs(a_conf - selective(js, "confidence")["aurc"]) < 1e-6, (d, m)
            boot_dece = np.array([calibration(q[i], y[i])[3] - calibration(p[i], y[i])[3]
                                  for i in idx])
            e = {"seed": s, "js": js, "T": t, "ece0": c0, "ece1": c1, "dece": c1 - c0,
                 "boot_dece": boot_dece, "ids": ids, "p": p, "y": y, "q": q, "acc": js["accuracy"],
                 "auc": js["auc"], "aurc_conf": a_conf}
            if sp is not None:
                a_sp = aurc(-sp, right)
                assert abs(a_sp - selective(js, "spread")["aurc"]) < 1e-6, (d, m)
                e["aurc_spread"] = a_sp
                e["boot_daurc"] = np.array([aurc(-sp[i], right[i]) - aurc(conf[i], right[i])
                                            for i in idx])
            per.append(e)
        assert all(e["ids"] == per[0]["ids"] for e in per), "the seeds' test slides differ"
        detail[m] = per
        rows.append((m, title, per))

    def delta(per, key, bkey):
        mean = np.mean([e[key] for e in per])  # the paired difference, seed by seed
        b = np.mean([e[bkey] for e in per], axis=0)
        return f"{fmt(mean)} [{fmt(np.percentile(b, 2.5))}, {fmt(np.percentile(b, 97.5))}]"

    print("Calibration (top-label ECE, 15 bins, test split):\n")
    print("| model | ACC | AUC | T (fit on val) | ECE before | ECE after | Δ ECE (after − before) "
          "| seeds improved (their Δ from … to) | mean confidence before → after | max confidence before → after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    bound = []
    for m, title, per in rows:
        improved = sum(e["ece1"] < e["ece0"] for e in per)
        mc0 = [e["js"]["calibration"]["mean_confidence"] for e in per]
        mc1 = [float(e["q"].max(axis=1).mean()) for e in per]
        mx0 = max(float(e["p"].max(axis=1).max()) for e in per)
        mx1 = max(float(e["q"].max(axis=1).max()) for e in per)
        ts = [e["T"] for e in per]
        bound += [f"{title} seed {e['seed']} (T {e['T']:.2f})" for e in per
                  if not T_LO * 1.001 < e["T"] < T_HI * 0.999]
        print(f"| {title} | {span([e['acc'] for e in per])} | {span([e['auc'] for e in per])} "
              f"| {fmt(min(ts), 2)}–{fmt(max(ts), 2)} | {span([e['ece0'] for e in per])} "
              f"| {span([e['ece1'] for e in per])} | {delta(per, 'dece', 'boot_dece')} "
              f"| {improved} of {len(per)} ({sfmt(min(e['dece'] for e in per))} … "
              f"{sfmt(max(e['dece'] for e in per))}) | {fmt(np.mean(mc0))} → {fmt(np.mean(mc1))} "
              f"| {fmt(mx0)} → {fmt(mx1)} |")
    print()
    if bound:
        print(f"The temperature is searched in [{T_LO}, {T_HI}] (mexd_fit_temperature); at the "
              f"bound: {', '.join(bound)}.\n")
    print("Selective classification (test split; AURC: the mean risk over coverages, lower is "
          "better; a random ranking's expected AURC is the error rate 1 − ACC):\n")
    print("| model | ranked by | AURC | 1 − ACC | ACC@80 % | ACC@90 % | ACC (100 %) "
          "| Δ AURC (spread − confidence) | seeds spread better (their Δ from … to) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, title, per in rows:
        for by in ("confidence", "spread"):
            sel = [selective(e["js"], by) for e in per]
            if sel[0] is None:
                continue
            d = " | "
            if by == "spread":  # the paired difference, seed by seed
                ds = [e["aurc_spread"] - e["aurc_conf"] for e in per]
                b = np.mean([e["boot_daurc"] for e in per], axis=0)
                d = (f"{fmt(np.mean(ds))} [{fmt(np.percentile(b, 2.5))}, "
                     f"{fmt(np.percentile(b, 97.5))}] | {sum(x < 0 for x in ds)} of {len(ds)} "
                     f"({sfmt(min(ds))} … {sfmt(max(ds))})")
            print(f"| {title} | {by} | {span([s['aurc'] for s in sel])} "
                  f"| {span([1 - e['acc'] for e in per])} "
                  f"| {span([s['accuracy_at_80'] for s in sel])} "
                  f"| {span([s['accuracy_at_90'] for s in sel])} "
                  f"| {span([s['accuracy'] for s in sel])} | {d} |")
    per = detail["mexd"]
    ref = [e["js"].get("referral") for e in per]
    if all(ref):
        print()
        print(f"MExD's referral (spread above the threshold that keeps 90 % of the validation "
              f"slides): {span([r['referred'] for r in ref], 1)} of {n} test slides referred "
              f"({span([100 * r['referred'] / n for r in ref], 1)} %); accuracy on the slides kept "
              f"{span([r['kept_accuracy'] for r in ref])}, on all {span([e['acc'] for e in per])}.")
    print()
    for m, title, per in rows:
        sp = "aurc_spread" in per[0]
        print(f"{title}, per seed (mexd's 95 % intervals over {BOOT} bootstrap resamples of the "
              "slides):\n")
        head = "| seed | ACC | AUC | T | ECE before | ECE after | AURC by confidence | ACC@80/90 %"
        line = "|---|---|---|---|---|---|---|---"
        if sp:
            head += " | AURC by spread | ACC@80/90 % by spread | referred (kept ACC)"
            line += "|---|---|---"
        print(head + " |")
        print(line + "|")
        for e in per:
            js, cal = e["js"], e["js"]["calibration"]
            c = selective(js, "confidence")
            r = (f"| {e['seed']} | {fmt(e['acc'])} | {fmt(e['auc'])} | {fmt(e['T'], 2)} "
                 f"| {ival(cal['ece'], cal['ece_interval'])} "
                 f"| {ival(cal['ece_calibrated'], cal['ece_calibrated_interval'])} "
                 f"| {ival(c['aurc'], c['aurc_interval'])} "
                 f"| {fmt(c['accuracy_at_80'])} / {fmt(c['accuracy_at_90'])}")
            if sp:
                s = selective(js, "spread")
                rf = js["referral"]
                r += (f" | {ival(s['aurc'], s['aurc_interval'])} "
                      f"| {fmt(s['accuracy_at_80'])} / {fmt(s['accuracy_at_90'])} "
                      f"| {rf['referred']} ({fmt(rf['kept_accuracy'])})")
            print(r + " |")
        print()
    if figures and 1 in seeds:
        figures.mkdir(parents=True, exist_ok=True)
        for m, _, _ in rows:
            png = root / preset / "s1" / f"reliability-{m}.png"
            if png.exists():
                shutil.copyfile(png, figures / f"reliability-{preset}-{m}.png")


def main():
    args = sys.argv[1:]
    figures = None
    if "--figures" in args:
        i = args.index("--figures")
        figures = Path(args[i + 1])
        del args[i:i + 2]
    if len(args) != 1:
        sys.exit(__doc__.split("\n\n")[0])
    root = Path(args[0])
    print("# Risk–coverage and calibration of the preset benchmark (bench/uncertainty.sh)\n")
    for preset in PRESETS:
        cohort(root, preset, figures)


if __name__ == "__main__":
    main()
