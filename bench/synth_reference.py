#!/usr/bin/python3
"""synth_reference.py COHORT: two scikit-learn references for a `mexd synth-bags` cohort.

  mean pool  each bag's mean feature, logistic regression on the train split: what a MIL model
             must beat (the lesion instances are a few per cent of a bag);
  oracle     logistic regression on the TRUE instance labels of the train bags (the
             `instance_label` dataset synth-bags writes; a MIL model never sees it), a bag scored
             by the mean of its top 1 % instance probabilities: how separable the lesions are.
Both are trained on the whole train split (no val carve) and scored on the test split (AUC:
binary for 2 classes, one-vs-rest macro for more; the mean pool's ACC too), each AUC with its 95 %
interval from 2,000 bootstrap resamples of the test slides (percentile; resamples that miss a
class are drawn again).  docs/RESULTS.md quotes them.
"""
import csv
import json
import sys

import h5py
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score


def auc(y, p):
    return roc_auc_score(y, p[:, 1]) if p.shape[1] == 2 else roc_auc_score(y, p, multi_class="ovr")


def auc_ci(y, p, n=2000, seed=0):
    """AUC and its 95 % percentile bootstrap interval over the test slides."""
    rng = np.random.default_rng(seed)
    k, vals = len(np.unique(y)), []
    while len(vals) < n:
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(y[i])) == k:
            vals.append(auc(y[i], p[i]))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return f"{auc(y, p):.3f} [{lo:.3f}, {hi:.3f}]"


def main(root):
    rows = list(csv.DictReader(open(f"{root}/labels.csv")))
    classes = json.load(open(f"{root}/synth.json"))["classes"]
    rng = np.random.default_rng(0)
    bags, Xi, yi = [], [], []
    for r in rows:
        with h5py.File(f"{root}/h5_files/{r['slide_id']}.h5", "r") as f:
            x = f["features"][:].astype(np.float64)
            lab = f["instance_label"][:]
        y = classes.index(r["label"])
        bags.append((x, y, r["split"]))
        if r["split"] == "train":  # all lesion instances, 400 others per bag
            k = np.union1d(rng.choice(len(x), min(len(x), 400), replace=False), np.where(lab > 0)[0])
            Xi.append(x[k])
            yi.append(lab[k])
    tr = [b for b in bags if b[2] == "train"]
    te = [b for b in bags if b[2] == "test"]
    yte = np.array([b[1] for b in te])

    pool = LogisticRegression(max_iter=5000).fit(np.array([b[0].mean(0) for b in tr]),
                                                 [b[1] for b in tr])
    p = pool.predict_proba(np.array([b[0].mean(0) for b in te]))
    print(f"{root}: train {len(tr)} test {len(te)}")
    print(f"  mean pool + logistic regression: test AUC {auc_ci(yte, p)} ACC "
          f"{accuracy_score(yte, p.argmax(1)):.3f}")

    inst = LogisticRegression(max_iter=3000).fit(np.concatenate(Xi), np.concatenate(yi))
    s = []
    for x, _, _ in te:
        q = inst.predict_proba(x)
        s.append(np.sort(q, 0)[-max(1, len(x) // 100):].mean(0))
    s = np.array(s)
    s /= s.sum(1, keepdims=True)
    # (its argmax is not calibrated — class 0's instances dominate every bag — so no ACC)
    print(f"  oracle (true instance labels, top-1 % pooling): test AUC {auc_ci(yte, s)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
