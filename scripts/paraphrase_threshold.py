"""Measure the question-grouping threshold on fixtures/paraphrase/pairs.jsonl.

The desk groups posts whose sentence embeddings have a cosine similarity above a threshold.
This script embeds both texts of every labelled pair exactly as sentence-transformers does
for the base model (all-MiniLM-L6-v2 in .venv/base-model):

- its tokenizer (tokenizer.json), truncating at `max_seq_length` from the checkpoint's
  sentence_bert_config.json (256 for this checkpoint; 128 if the file does not say, as in
  crates/model/src/embed.rs), no lower-casing beyond the tokenizer's own;
- BertModel's last hidden state;
- mean pooling over the attention mask (1_Pooling/config.json: pooling_mode_mean_tokens);
- L2 normalisation (modules.json's 2_Normalize),

and counts, for each threshold t, a pair as "grouped" when cosine >= t. Precision, recall and
F1 of "grouped" against the hand label `same` are printed as a table, with the threshold of
highest precision whose recall is still >= 0.5, and the F1-best one.

    .venv/bin/python scripts/paraphrase_threshold.py [--pairs PATH] [--json OUT]

`--json` also writes every pair's cosine (6 decimals) and the table, for checking another
implementation (the Rust encoder) against these numbers.
"""
import argparse
import json
import pathlib

import torch
from transformers import AutoModel, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = ROOT / ".venv" / "base-model"
PAIRS = ROOT / "fixtures" / "paraphrase" / "pairs.jsonl"
DEFAULT_MAX_LENGTH = 128
BATCH = 64
THRESHOLDS = [round(0.50 + 0.05 * i, 2) for i in range(10)]  # 0.50 … 0.95


def max_seq_length(base=BASE):
    path = pathlib.Path(base) / "sentence_bert_config.json"
    if path.exists():
        return int(json.loads(path.read_text()).get("max_seq_length", DEFAULT_MAX_LENGTH))
    return DEFAULT_MAX_LENGTH


class Embedder:
    """sentence-transformers' Transformer → Pooling(mean) → Normalize, in plain transformers."""

    def __init__(self, base=BASE, max_length=None):
        self.tok = AutoTokenizer.from_pretrained(base)
        self.model = AutoModel.from_pretrained(base).eval()
        self.max_length = min(max_length or max_seq_length(base), self.model.config.max_position_embeddings)

    @torch.no_grad()
    def embed(self, texts):
        out = []
        for i in range(0, len(texts), BATCH):
            batch = self.tok(list(texts[i:i + BATCH]), padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(summed / counts, p=2, dim=1))
        return torch.cat(out) if out else torch.zeros(0, self.model.config.hidden_size)


def pair_cosines(pairs, embedder):
    texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    index = {t: i for i, t in enumerate(texts)}
    emb = embedder.embed(texts)
    a = emb[[index[p["a"]] for p in pairs]]
    b = emb[[index[p["b"]] for p in pairs]]
    return (a * b).sum(dim=1).tolist()


def scores(cosines, labels, t):
    tp = sum(1 for c, y in zip(cosines, labels) if c >= t and y)
    fp = sum(1 for c, y in zip(cosines, labels) if c >= t and not y)
    fn = sum(1 for c, y in zip(cosines, labels) if c < t and y)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"threshold": t, "tp": tp, "fp": fp, "fn": fn, "grouped": tp + fp,
            "precision": precision, "recall": recall, "f1": f1}


def table(cosines, labels, thresholds=THRESHOLDS):
    return [scores(cosines, labels, t) for t in thresholds]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default=str(PAIRS))
    ap.add_argument("--json", help="write per-pair cosines and the table here")
    ap.add_argument("--max-length", type=int,
                    help="tokens per text (default: the checkpoint's sentence_bert_config.json, 256)")
    args = ap.parse_args()

    pairs = [json.loads(line) for line in pathlib.Path(args.pairs).read_text().splitlines() if line.strip()]
    embedder = Embedder(max_length=args.max_length)
    cosines = pair_cosines(pairs, embedder)
    labels = [bool(p["same"]) for p in pairs]
    pos = sum(labels)
    print(f"{len(pairs)} pairs: {pos} same, {len(pairs) - pos} different; "
          f"max_seq_length {embedder.max_length}")

    def report(name, cos, lab):
        rows = table(cos, lab)
        print(f"\n{name} ({len(lab)} pairs, {sum(lab)} same)")
        print("threshold  grouped   tp   fp   fn  precision  recall     F1")
        for r in rows:
            print(f"   {r['threshold']:.2f}   {r['grouped']:6d} {r['tp']:4d} {r['fp']:4d} {r['fn']:4d}"
                  f"     {r['precision']:.3f}   {r['recall']:.3f}  {r['f1']:.3f}")
        ok = [r for r in rows if r["recall"] >= 0.5]
        best_p = max(ok, key=lambda r: (r["precision"], r["recall"])) if ok else None
        best_f1 = max(rows, key=lambda r: (r["f1"], r["precision"]))
        if best_p:
            print(f"highest precision with recall >= 0.5: {best_p['threshold']:.2f} "
                  f"(P {best_p['precision']:.3f}, R {best_p['recall']:.3f}, F1 {best_p['f1']:.3f})")
        print(f"best F1: {best_f1['threshold']:.2f} "
              f"(P {best_f1['precision']:.3f}, R {best_f1['recall']:.3f}, F1 {best_f1['f1']:.3f})")
        return rows, best_p, best_f1

    rows, best_p, best_f1 = report("all pairs", cosines, labels)
    # Per text pool (the part of `source` before the first '#').
    by_pool = {}
    for p, c, y in zip(pairs, cosines, labels):
        by_pool.setdefault(p["source"].split("#")[0], []).append((c, y))
    if len(by_pool) > 1:
        for pool, rows_ in sorted(by_pool.items()):
            report(pool, [c for c, _ in rows_], [y for _, y in rows_])

    print("\nfirst 5 pairs' cosines:")
    for p, c in zip(pairs[:5], cosines[:5]):
        print(f"  {c:.6f}  same={p['same']}  {p['source']}")

    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({
            "max_seq_length": embedder.max_length,
            "cosines": [round(c, 6) for c in cosines],
            "table": rows,
            "best_precision_recall_ge_0_5": best_p,
            "best_f1": best_f1,
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
