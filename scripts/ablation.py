"""The model ablation (issue 17): each change to the fine-tuning of the default MiniLM, trained
with the release `flagship train` on TweetEval and scored on the held-out 40 % set
(fixtures/tweeteval-sentiment/heldout-40.jsonl) and the out-of-domain set
(fixtures/out-of-domain/labelled.jsonl). Nothing here tunes on either scored set: thresholds
come from each model's validation (flagship.json), ensembles' from validation too.

    python3 scripts/ablation.py [--only ARM ...] [--flagship PATH]

Writes data/ablation/<arm>/ (models, predictions) and data/ablation/results.json, and prints
the markdown table docs/model.md shows. An arm whose model folder exists is not retrained.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = pathlib.Path(__file__).resolve().parent.parent
TE = ROOT / "fixtures" / "tweeteval-sentiment"
OOD = ROOT / "fixtures" / "out-of-domain" / "labelled.jsonl"
OUT = ROOT / "data" / "ablation"
RATE = 0.40

# The reference setting: 20,000 examples, 1 epoch, batch 32, max length 64, lr 5e-5.
BASE = ["--limit", "20000", "--epochs", "1", "--batch-size", "32", "--max-length", "64",
        "--learning-rate", "5e-5", "--operating-point", "f2"]
ARMS = {
    "cls-2": ("first-token head, 2 labels (transformers' layout; the issue's baseline)",
              BASE + ["--pooling", "cls", "--classes", "2"]),
    "mean-2": ("mean pooling (how the checkpoint was trained)", BASE + ["--pooling", "mean", "--classes", "2"]),
    "mean-3": ("mean pooling, 3 classes, P(need) = P(neg) + P(neu)",
               BASE + ["--pooling", "mean", "--classes", "3"]),
    "linear": ("linear baseline (TF-IDF + LR, same 20k sample)", ["--model-kind", "linear", "--limit", "20000"]),
    "full": ("mean, 3 classes, all 45.6k, 2 epochs, max length 96 (the full-quality run)",
             ["--epochs", "2", "--batch-size", "32", "--max-length", "96", "--learning-rate", "5e-5",
              "--pooling", "mean", "--classes", "3", "--operating-point", "f2"]),
    "linear-all": ("linear baseline on all 45.6k", ["--model-kind", "linear"]),
    "mean-3-lld": ("… + layer-wise lr decay 0.9, lr 1e-4",
                   [a if a != "5e-5" else "1e-4" for a in BASE]
                   + ["--pooling", "mean", "--classes", "3", "--layer-decay", "0.9"]),
}
# Probability averages with the linear model: (name, transformer arm, linear arm, linear weight).
BLENDS = [
    ("mean-3+linear", "mean-3", "linear", 0.3),
    ("mean-3+linear-0.5", "mean-3", "linear", 0.5),
    ("full+linear", "full", "linear-all", 0.3),
]


def read_jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def tune(probs, labels, rate=RATE):
    """The F2-best threshold on the set re-weighted to `rate` (flagship_core::scoring::tune)."""
    p = np.asarray(probs, float)
    y = np.asarray(labels, bool)
    n, pos = len(y), y.sum()
    wp, wn = rate * n / pos, (1 - rate) * n / (n - pos)
    order = np.argsort(-p, kind="stable")
    best, thr, i, tp, fp = 0.0, float("inf"), 0, 0.0, 0.0
    while i < n:
        v = p[order[i]]
        while i < n and p[order[i]] == v:
            if y[order[i]]:
                tp += wp
            else:
                fp += wn
            i += 1
        f = 5 * tp / (5 * tp + 4 * (pos * wp - tp) + fp)
        if f > best:
            best, thr = f, (v + p[order[i]]) / 2 if i < n else v
    return thr


def f2_at(probs, labels, t):
    p = np.asarray(probs) >= t
    y = np.asarray(labels, bool)
    tp, fp, fn = (p & y).sum(), (p & ~y).sum(), (~p & y).sum()
    return 5 * tp / (5 * tp + 4 * fn + fp) if tp else 0.0, tp / max(tp + fp, 1), tp / max(tp + fn, 1)


def predict(flagship, model, inp, out):
    if not out.exists():
        subprocess.run([flagship, "predict", "--model", str(model), "--input", str(inp),
                        "--output", str(out)], check=True, stdout=subprocess.DEVNULL)
    rows = read_jsonl(out)
    return [r["need_support_probability"] for r in rows], [int(r["label"]) <= 1 for r in rows]


def score(probs, labels, t):
    f2, prec, rec = f2_at(probs, labels, t)
    return {"f2": round(float(f2), 4), "precision": round(float(prec), 4),
            "recall": round(float(rec), 4), "auc": round(float(roc_auc_score(labels, probs)), 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--flagship", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")), "release", "flagship"))
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results_path = OUT / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    sets = {"val": TE / "val.jsonl", "heldout": TE / "heldout-40.jsonl", "ood": OOD}
    preds = {}
    for arm, (what, flags) in ARMS.items():
        if a.only and arm not in a.only and arm not in results:
            continue
        d = OUT / arm
        if not d.exists():
            t0 = time.time()
            print(f"== {arm}: {what}", file=sys.stderr, flush=True)
            subprocess.run([a.flagship, "train", "--train", str(TE / "train.jsonl.gz"),
                            "--val", str(TE / "val.jsonl"), "--out", str(d)] + flags, check=True)
            print(f"   {arm}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        card = json.loads((d / "flagship.json").read_text())
        preds[arm] = {k: predict(a.flagship, d, v, d / f"{k}.jsonl") for k, v in sets.items()
                      if v.exists()}
        t = card["threshold"]
        results[arm] = {"what": what, "threshold": t,
                        "train_seconds": round(card["training"]["seconds"], 1),
                        **{k: score(*preds[arm][k], t) for k in preds[arm] if k != "val"}}
        results_path.write_text(json.dumps(results, indent=1))
    for name, tr, lin, w in BLENDS:
        if tr not in preds or lin not in preds:
            continue
        blend = {k: ([(1 - w) * p + w * q for p, q in zip(preds[tr][k][0], preds[lin][k][0])],
                     preds[tr][k][1]) for k in preds[tr]}
        t = tune(*blend["val"])
        results[name] = {"what": f"{tr} + {lin} (probability average, linear weight {w})",
                         "threshold": t,
                         "train_seconds": round(results[tr]["train_seconds"] + results[lin]["train_seconds"], 1),
                         **{k: score(*blend[k], t) for k in blend if k != "val"}}
    results_path.write_text(json.dumps(results, indent=1))
    # Always-flag: F2 of flagging everything.
    for k, path in [("heldout", sets["heldout"]), ("ood", sets["ood"])]:
        if path.exists():
            y = [int(r["label"]) <= 1 for r in read_jsonl(path)]
            results.setdefault("always-flag", {"what": "flag every post", "train_seconds": 0})[k] = \
                {"f2": round(5 * sum(y) / (5 * sum(y) + len(y) - sum(y)), 4)}
    results_path.write_text(json.dumps(results, indent=1))
    print("| arm | what | held-out F2 | AUC | OOD F2 | OOD AUC | train s |")
    print("|---|---|---|---|---|---|---|")
    for arm, r in results.items():
        h, o = r.get("heldout", {}), r.get("ood", {})
        print(f"| {arm} | {r['what']} | {h.get('f2', '')} | {h.get('auc', '')} | {o.get('f2', '')} | "
              f"{o.get('auc', '')} | {r['train_seconds']} |")


if __name__ == "__main__":
    main()
