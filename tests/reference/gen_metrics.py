#!/usr/bin/python3
"""Writes tests/fixtures/metrics/cases.json: scikit-learn's numbers for the metrics of
lib/train/metrics.h (tests/test-metrics.c compares with them at 1e-12).

Run with the Debian python (numpy, sklearn 1.2.1):  /usr/bin/python3 tests/reference/gen_metrics.py

Each case: probs [n][C] (rows summing to ~1), labels [n], and sklearn's
  pred        = probs.argmax(1)                         (ties: the lowest class index)
  accuracy    = accuracy_score(labels, pred)
  precision, recall, f1, support
              = precision_recall_fscore_support(labels, pred, labels=range(C), zero_division=0)
  macro_f1    = f1_score(labels, pred, average='macro', labels=range(C), zero_division=0)
  confusion   = confusion_matrix(labels, pred, labels=range(C))
  class_auc[c]= roc_auc_score(labels == c, probs[:, c]), null when class c has no positive or no
                negative
  auc         = C == 2: roc_auc_score(labels, probs[:, 1]); C > 2: roc_auc_score(labels, probs,
                multi_class='ovr', average='macro').  Where sklearn raises (a class absent, or only
                one class present), sklearn_auc_raises is true and auc is the convention of
                metrics.h: the mean of the defined class AUCs ("partial"), null when none
                ("undefined").
Every AUC sklearn gives is also checked here against an exact Mann-Whitney count with ties 1/2
(fractions.Fraction), so the fixture cannot silently carry a different tie convention.
"""
import json
import os
from fractions import Fraction

import numpy as np
import sklearn
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support, roc_auc_score)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'metrics',
                   'cases.json')


def mann_whitney(pos, scores):
    """Exact AUC: pairs (positive, negative), 1 when the positive is higher, 1/2 on a tie."""
    p = scores[pos]
    q = scores[~pos]
    num = sum(2 * int((q < s).sum()) + int((q == s).sum()) for s in p)
    return Fraction(num, 2 * len(p) * len(q))


def case(name, probs, labels, C):
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, C)
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    assert probs.shape == (n, C) and n >= 1
    assert np.all((y >= 0) & (y < C))
    assert np.allclose(probs.sum(1), 1.0), name
    pred = probs.argmax(1)
    L = list(range(C))
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=L, zero_division=0)
    macro_f1 = f1_score(y, pred, average='macro', labels=L, zero_division=0)
    assert abs(macro_f1 - np.mean(f1)) < 1e-15
    cm = confusion_matrix(y, pred, labels=L)

    class_auc = []
    for c in range(C):
        pos = y == c
        if 0 < pos.sum() < n:
            a = roc_auc_score(pos.astype(int), probs[:, c])
            assert abs(a - float(mann_whitney(pos, probs[:, c]))) < 1e-14, (name, c)
            class_auc.append(float(a))
        else:
            class_auc.append(None)
    defined = [a for a in class_auc if a is not None]

    raises = False
    try:
        if C == 2:
            auc = float(roc_auc_score(y, probs[:, 1]))
            assert auc == class_auc[1]
        else:
            auc = float(roc_auc_score(y, probs, multi_class='ovr', average='macro'))
            assert abs(auc - np.mean(defined)) < 1e-15 and len(defined) == C
        status = 'defined'
    except ValueError:
        raises = True
        if C == 2 or not defined:
            auc, status = None, 'undefined'
        else:
            auc, status = float(np.mean(defined)), 'partial'
    if C == 2:
        assert raises == (class_auc[1] is None)
    else:
        assert raises == (len(defined) < C)

    return {
        'name': name,
        'n_classes': C,
        'probs': [[float(v) for v in row] for row in probs],
        'labels': [int(v) for v in y],
        'pred': [int(v) for v in pred],
        'accuracy': float(accuracy_score(y, pred)),
        'auc': auc,
        'auc_status': status,
        'sklearn_auc_raises': raises,
        'n_auc_classes': len(defined),
        'class_auc': class_auc,
        'precision': [float(v) for v in prec],
        'recall': [float(v) for v in rec],
        'f1': [float(v) for v in f1],
        'support': [int(v) for v in sup],
        'macro_f1': float(macro_f1),
        'confusion': [[int(v) for v in row] for row in cm],
    }


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def informative(rng, n, C, strength, labels=None):
    """Probabilities that lean towards the label (AUCs well above 1/2, not perfect)."""
    y = rng.integers(0, C, n) if labels is None else np.asarray(labels)
    z = rng.normal(size=(n, C))
    z[np.arange(n), y] += strength
    return softmax(z), y


def quantize(p, steps):
    """Rows of multiples of 1/steps summing to 1: many exact ties, still probabilities."""
    k = np.floor(p * steps).astype(np.int64)
    short = steps - k.sum(1)
    for i in range(len(k)):
        # the missing units go to the largest remainders (deterministic: lowest index first)
        rem = p[i] * steps - k[i]
        for c in np.argsort(-rem, kind='stable')[:short[i]]:
            k[i, c] += 1
    return k / steps


def main():
    cases = []
    # continuous scores, no ties
    for seed, (n, C) in enumerate([(40, 2), (50, 3), (60, 4)]):
        rng = np.random.default_rng(100 + seed)
        p, y = informative(rng, n, C, 1.2)
        cases.append(case(f'continuous-c{C}-n{n}', p, y, C))
    # rounded probabilities: many exact ties (1 decimal: 11 levels; 2 decimals)
    for seed in range(4):
        for C, n, steps in [(2, 60, 10), (3, 60, 10), (4, 80, 10), (3, 90, 100), (4, 120, 20)]:
            rng = np.random.default_rng(1000 * seed + 10 * C + steps)
            p, y = informative(rng, n, C, 1.0 + 0.5 * seed)
            cases.append(case(f'ties-s{seed}-c{C}-n{n}-q{steps}', quantize(p, steps), y, C))
    # binary from a single rounded score column p1, p0 = 1 - p1
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 70)
    p1 = np.round(np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.25, 70), 0, 1), 1)
    cases.append(case('ties-binary-1dec', np.stack([1 - p1, p1], 1), y, 2))
    # perfectly separated, and perfectly reversed
    rng = np.random.default_rng(8)
    y = np.array([0, 1] * 10)
    p1 = np.where(y == 1, rng.uniform(0.6, 1.0, 20), rng.uniform(0.0, 0.4, 20))
    cases.append(case('separated-binary', np.stack([1 - p1, p1], 1), y, 2))
    cases.append(case('reversed-binary', np.stack([p1, 1 - p1], 1), y, 2))
    y = np.repeat(np.arange(3), 5)
    p = np.full((15, 3), 0.1)
    p[np.arange(15), y] = 0.8
    cases.append(case('separated-c3', p, y, 3))
    # all the same score
    y = np.array([0, 1, 1, 0, 1, 0, 0])
    cases.append(case('same-binary', np.full((7, 2), 0.5), y, 2))
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1])
    cases.append(case('same-c3', np.full((8, 3), 1 / 3), y, 3))
    y = np.array([3, 1, 2, 0, 0, 1, 2, 3, 3])
    cases.append(case('same-c4', np.full((9, 4), 0.25), y, 4))
    # argmax ties (the lowest index wins)
    cases.append(case('argmax-ties-binary', [[0.5, 0.5], [0.5, 0.5], [0.3, 0.7], [0.5, 0.5]],
                      [1, 0, 1, 1], 2))
    cases.append(case('argmax-ties-c3',
                      [[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [0.4, 0.2, 0.4], [0.3, 0.3, 0.4],
                       [0.25, 0.5, 0.25], [0.5, 0.25, 0.25], [0.1, 0.45, 0.45]],
                      [1, 2, 2, 2, 1, 0, 1], 3))
    cases.append(case('argmax-ties-c4',
                      [[0.25, 0.25, 0.25, 0.25], [0.1, 0.3, 0.3, 0.3], [0.0, 0.5, 0.0, 0.5],
                       [0.4, 0.1, 0.1, 0.4], [0.2, 0.2, 0.3, 0.3], [0.7, 0.1, 0.1, 0.1]],
                      [3, 2, 3, 3, 3, 0], 4))
    # a class absent from the labels: the others' AUCs, the mean over them ("partial")
    rng = np.random.default_rng(9)
    p, y = informative(rng, 30, 3, 1.5, labels=rng.choice([0, 2], 30))
    cases.append(case('absent-c3-class1', quantize(p, 10), y, 3))
    p, y = informative(rng, 40, 4, 1.5, labels=rng.choice([0, 1, 3], 40))
    cases.append(case('absent-c4-class2', p, y, 4))
    p, y = informative(rng, 40, 4, 1.0, labels=rng.choice([1, 2], 40))
    cases.append(case('absent-c4-two-classes', quantize(p, 10), y, 4))
    # a single class present: no AUC at all
    p, y = informative(rng, 12, 3, 1.0, labels=np.full(12, 1))
    cases.append(case('single-class-c3', p, y, 3))
    p, y = informative(rng, 10, 2, 1.0, labels=np.zeros(10, dtype=int))
    cases.append(case('single-class-binary', quantize(p, 10), y, 2))
    # a class never predicted (its precision and F1 0 under zero_division=0)
    rng = np.random.default_rng(10)
    y = rng.integers(0, 3, 30)
    p = rng.dirichlet([3, 3, 1], 30)
    p[:, 2] *= 0.2
    p = p / p.sum(1, keepdims=True)
    p[:, 2] = 1 - p[:, 0] - p[:, 1]
    cases.append(case('never-predicted-c3', p, y, 3))
    y = rng.integers(0, 2, 12)
    cases.append(case('never-predicted-binary', np.tile([0.8, 0.2], (12, 1)) -
                      np.outer(rng.uniform(0, 0.25, 12), [1, -1]), y, 2))
    # tiny n
    cases.append(case('n1-binary', [[0.3, 0.7]], [1], 2))
    cases.append(case('n1-c3', [[0.2, 0.5, 0.3]], [2], 3))
    cases.append(case('n2-binary', [[0.6, 0.4], [0.2, 0.8]], [0, 1], 2))
    cases.append(case('n2-binary-tied', [[0.5, 0.5], [0.5, 0.5]], [1, 0], 2))
    cases.append(case('n2-binary-wrong', [[0.2, 0.8], [0.6, 0.4]], [0, 1], 2))
    cases.append(case('n2-binary-same-label', [[0.2, 0.8], [0.6, 0.4]], [1, 1], 2))
    cases.append(case('n2-c3', [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], [2, 0], 3))
    # a larger 4-class split with 2-decimal ties (numpy's pairwise sums stay sequential at C < 8)
    rng = np.random.default_rng(11)
    p, y = informative(rng, 200, 4, 1.0)
    cases.append(case('large-c4-n200-q100', quantize(p, 100), y, 4))

    names = [c['name'] for c in cases]
    assert len(set(names)) == len(names)
    doc = {'generator': 'tests/reference/gen_metrics.py', 'sklearn': sklearn.__version__,
           'numpy': np.__version__, 'cases': cases}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, 'w') as f:
        json.dump(doc, f, separators=(',', ':'))
        f.write('\n')
    print(f'{OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes')


if __name__ == '__main__':
    main()
