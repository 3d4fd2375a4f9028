#!/usr/bin/python3
"""Writes tests/fixtures/metrics/uncertainty.json: independent numbers for the risk–coverage,
calibration, temperature and bootstrap functions of lib/train/metrics.h (tests/test-metrics.c,
/train/metrics/uncertainty, compares with them).

    /usr/bin/python3 tests/reference/gen_uncertainty.py

Each case: probs [n][C], labels [n], and
  risk–coverage of the top-class probability (confidence) and of a second score (`score`):
      aurc, acc_at_80, acc_at_90, accuracy: computed here by averaging over EVERY order of the
      slides within each group of tied scores (itertools.permutations; the cases keep groups
      small), the risk at coverage k being the error rate of the first k — the expectation the
      C code computes in closed form (pro rata within a group)
  ece (15 bins) and the per-bin counts, confidences and accuracies: numpy, bins by np.digitize
      on the right-closed edges
  temperature: scipy.optimize.minimize_scalar (bounded, on log T in [log 0.05, log 20], xatol
      1e-9) of the mean NLL of softmax(log p / T), the NLL there, whether the NLL is flat around
      it (no unique minimiser), and the tempered probabilities at that T
  boot_acc: the 95 % percentile interval (np.percentile) of the accuracy over 200 bootstrap
      resamples drawn with philox.py exactly as mexd_bootstrap_interval draws them (seed 7)
"""
import itertools
import json
import math
import os
import sys

import numpy as np
from scipy.optimize import minimize_scalar

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from philox import philox4x32_10  # noqa: E402

OUT = os.path.join(HERE, '..', 'fixtures', 'metrics', 'uncertainty.json')
BOOT_TAG = 0x626f6f74


def risk_coverage(score, correct):
    n = len(score)
    groups = []  # descending score, each a list of correctness flags
    for s in sorted(set(score.tolist()), reverse=True):
        groups.append([bool(c) for c, x in zip(correct, score) if x == s])
    k80, k90 = math.ceil(0.8 * n - 1e-12), math.ceil(0.9 * n - 1e-12)
    tot = {'aurc': 0.0, 'acc_at_80': 0.0, 'acc_at_90': 0.0, 'accuracy': 0.0}
    orders = list(itertools.product(*[set(itertools.permutations(g)) for g in groups]))
    for order in orders:
        seq = [c for g in order for c in g]
        risks = [sum(not c for c in seq[:k]) / k for k in range(1, n + 1)]
        tot['aurc'] += sum(risks) / n
        tot['acc_at_80'] += 1 - risks[k80 - 1]
        tot['acc_at_90'] += 1 - risks[k90 - 1]
        tot['accuracy'] += 1 - risks[n - 1]
    return {k: v / len(orders) for k, v in tot.items()}


def calibration(p, y, bins=15):
    pred = p.argmax(1)
    conf = p[np.arange(len(p)), pred]
    right = (pred == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(b, minlength=bins)
    bc = [float(conf[b == i].mean()) if count[i] else None for i in range(bins)]
    ba = [float(right[b == i].mean()) if count[i] else None for i in range(bins)]
    ece = sum(count[i] / len(p) * abs(ba[i] - bc[i]) for i in range(bins) if count[i])
    return float(ece), count.tolist(), bc, ba


def tempered(p, T):
    l = np.log(np.maximum(p, 1e-12)) / T
    e = np.exp(l - l.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def fit_temperature(p, y):
    nll = lambda u: -np.mean(np.log(tempered(p, math.exp(u))[np.arange(len(y)), y]))
    r = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20)), method='bounded',
                        options={'xatol': 1e-9})
    return math.exp(r.x)


def boot_accuracy(right, B=200, seed=7):
    n = len(right)
    key = (seed & 0xffffffff, seed >> 32)
    vals = []
    for r in range(B):
        idx = []
        for j in range(n):
            if j % 4 == 0:
                w = philox4x32_10((j // 4, r, 0, BOOT_TAG), key)
            idx.append((w[j % 4] * n) >> 32)
        vals.append(float(np.mean(right[idx])))
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def main():
    rng = np.random.default_rng(2026)
    cases = []
    specs = [(12, 2, None), (20, 3, None), (9, 2, 'ties'), (16, 3, 'ties'), (10, 2, 'perfect'),
             (7, 4, None)]
    for n, C, kind in specs:
        logits = rng.normal(0, 3, (n, C))
        # labels drawn from softmax(logits / 2): the probabilities are overconfident, so the
        # fitted temperature is inside (0.05, 20), above 1
        q = np.exp(logits / 2 - (logits / 2).max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        y = np.array([rng.choice(C, p=row) for row in q])
        if kind == 'perfect':
            logits[np.arange(n), y] += 10
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p = np.round(p, 6)  # exact in the JSON; rows need not sum to 1 exactly
        score = rng.normal(size=n).round(3)
        if kind == 'ties':
            p = np.round(p, 1)  # tied confidences
            score = rng.integers(0, 3, n).astype(float)  # groups of ties in the second score
        pred = p.argmax(1)
        conf = p[np.arange(n), pred]
        right = pred == y
        ece, count, bc, ba = calibration(p, y)
        T = fit_temperature(p, y)
        nll = lambda t: float(-np.mean(np.log(tempered(p, t)[np.arange(n), y])))
        # a flat NLL (every slide right at probability 1: any small T is as good) has no unique
        # minimiser: the test then compares the NLL reached, not T
        flat = abs(nll(T) - nll(T * 1.5)) < 1e-9 and abs(nll(T) - nll(T / 1.5)) < 1e-9
        cases.append({
            'n': n, 'C': C, 'probs': p.tolist(), 'labels': y.tolist(), 'score': score.tolist(),
            'rc_confidence': risk_coverage(conf, right), 'rc_score': risk_coverage(score, right),
            'ece': ece, 'bin_count': count, 'bin_confidence': bc, 'bin_accuracy': ba,
            'temperature': T, 'tempered': tempered(p, T).tolist(), 'nll': nll(T), 'flat': flat,
            'boot_acc': boot_accuracy(right.astype(float)),
        })
    with open(OUT, 'w') as f:
        json.dump({'cases': cases}, f, indent=0)
    print(f'{OUT}: {len(cases)} cases')


if __name__ == '__main__':
    main()
