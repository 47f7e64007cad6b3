"""scikit-learn's values for flagship-metrics' tests (fixtures/metrics/sklearn-reference.json).

    .venv/bin/python scripts/metrics_reference.py

Cases: random labels and probabilities with many ties (rounded to 0.05), a 40 % prevalence
case with a good model, an always-flag case, and a tiny hand case. For each: threshold metrics at
0.5 (binary and weighted), ROC-AUC, average precision, Brier score.
"""
import json
import pathlib

import numpy as np
import sklearn
from sklearn import metrics as m

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "metrics" / "sklearn-reference.json"


def case(name, y, p, threshold=0.5):
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=float)
    pred = p >= threshold
    out = {"name": name, "labels": y.tolist(), "probabilities": p.tolist(), "threshold": threshold}
    exp = {
        "accuracy": m.accuracy_score(y, pred),
        "balanced_accuracy": m.balanced_accuracy_score(y, pred),
        "roc_auc": m.roc_auc_score(y, p),
        "average_precision": m.average_precision_score(y, p),
        "brier": m.brier_score_loss(y, p),
    }
    for avg in ["binary", "weighted"]:
        exp[avg] = {
            "precision": m.precision_score(y, pred, average=avg, zero_division=0),
            "recall": m.recall_score(y, pred, average=avg, zero_division=0),
            "f1": m.f1_score(y, pred, average=avg, zero_division=0),
            "f05": m.fbeta_score(y, pred, beta=0.5, average=avg, zero_division=0),
            "f2": m.fbeta_score(y, pred, beta=2, average=avg, zero_division=0),
        }
    out["expected"] = {k: (float(v) if not isinstance(v, dict) else {a: float(b) for a, b in v.items()})
                       for k, v in exp.items()}
    return out


def main():
    rng = np.random.default_rng(2017)
    y = rng.random(300) < 0.55
    p = np.round(rng.random(300) * 20) / 20
    ties = case("random with ties", y, p)
    y40 = rng.random(600) < 0.40
    good = np.clip(0.35 * y40 + rng.normal(0.35, 0.2, 600), 0, 1)
    cases = [
        ties,
        case("40 % prevalence, informative model", y40, good, threshold=0.45),
        case("always flag", y40, np.full(600, 0.9)),
        case("hand", [True, False, True, True, False, False], [0.9, 0.8, 0.35, 0.35, 0.35, 0.1]),
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"sklearn": sklearn.__version__, "cases": cases}) + "\n")
    print(f"{OUT}: {len(cases)} cases, scikit-learn {sklearn.__version__}")


if __name__ == "__main__":
    main()
