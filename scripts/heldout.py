"""Builds the held-out quality-check set: TweetEval's test_pool re-sampled to 40 % need_support
(the seed's test split prevalence): every positive (label 2) plus a seeded sample of negatives
and neutrals. Output: fixtures/tweeteval-sentiment/heldout-40.jsonl (committed).

    python3 scripts/heldout.py
"""
import json
import pathlib
import random

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "fixtures" / "tweeteval-sentiment" / "test_pool.jsonl"
OUT = ROOT / "fixtures" / "tweeteval-sentiment" / "heldout-40.jsonl"
RATE = 0.40

rows = [json.loads(line) for line in SRC.open()]
pos = [r for r in rows if r["label"] == 2]
need = [r for r in rows if r["label"] in (0, 1)]
k = round(len(pos) * RATE / (1 - RATE))
picked = random.Random(40).sample(need, k)
out = sorted(pos + picked, key=lambda r: int(r["id"].split("-")[-1]))
with OUT.open("w") as f:
    for r in out:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(f"{OUT.relative_to(ROOT)}: {len(out)} rows, {k} need support ({k / len(out):.1%})")
