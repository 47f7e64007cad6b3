"""Build fixtures/paraphrase/pairs.jsonl: hand-labelled same-question / different-question pairs.

No public duplicate-question or paraphrase corpus could be had from the package registries this
project reaches (see fixtures/paraphrase/SOURCE.md), so the pairs are made from real posts
already in fixtures/ and labelled by hand:

- pool `out-of-domain`: the 213 JWST tweets, Mastodon and Bluesky posts of
  fixtures/out-of-domain/labelled.jsonl (texts only; their sentiment labels are not used);
- pool `tweeteval-train`: a seeded sample of 10,000 of the 45,615 tweets of
  fixtures/tweeteval-sentiment/train.jsonl.gz (SemEval-2017 tweets were gathered per topic —
  an artist, a match, a product launch — so same-event pairs exist; texts only).

Candidate pairs are chosen without looking at any label, deterministically (numpy seed 20261206):

1. texts with fewer than 4 words are dropped; pairs whose normalised texts are equal or one a
   prefix of the other (the same tweet cut by a display, a retweet) are never chosen;
2. per pool, `TFIDF_N` pairs among those with word TF-IDF cosine >= 0.3 (a model-free stratum:
   pairs that share rare words, whatever the model thinks);
3. per pool, a fixed number of pairs drawn at random from each band of all-MiniLM-L6-v2 cosine
   (`BANDS_*`), highest band first, so the high-similarity bands where the threshold lives are
   well filled and the low bands supply clear negatives;
4. then a second round of TweetEval pairs from the bands >= 0.7 (`ROUND2_TWEETEVAL`), added
   after the first round was labelled, to bring the two classes closer to balance;
5. no text is used in more than `MAX_USES` chosen pairs.

The label `same` (true: one reply would answer both posts — the same specific question, event
or issue, not merely the same broad topic) is read from fixtures/paraphrase/labels.tsv, which
was written by hand from a blind listing (`--listing`: pairs shuffled, no cosines shown).
Rebuilding checks that every candidate has a label and every label a candidate, so a change
to the selection (or an embedding that moves a pair across a band edge) stops the build.

    .venv/bin/python scripts/make_paraphrase_pairs.py [--cache DIR]     # writes pairs.jsonl (~5 min)
    .venv/bin/python scripts/make_paraphrase_pairs.py --listing F [--unlabelled-only]
"""
import argparse
import gzip
import hashlib
import json
import math
import pathlib
import re
import sys
from collections import Counter

import numpy as np
from scipy import sparse

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from paraphrase_threshold import Embedder  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
OUT_DIR = FIX / "paraphrase"
SEED = 20261206
MAX_USES = 3
TFIDF_N = 20
TFIDF_MIN = 0.3
TRAIN_SAMPLE = 10_000
# (low, high, pairs) on the MiniLM cosine, per pool, highest band first.
BANDS_OOD = [(0.9, 1.01, 20), (0.8, 0.9, 30), (0.7, 0.8, 35), (0.6, 0.7, 35), (0.5, 0.6, 35),
             (0.4, 0.5, 30), (0.3, 0.4, 20), (-1.0, 0.3, 20)]
BANDS_TWEETEVAL = [(0.9, 1.01, 30), (0.8, 0.9, 50), (0.7, 0.8, 60), (0.6, 0.7, 50), (0.5, 0.6, 40),
                   (0.4, 0.5, 25), (0.3, 0.4, 15), (-1.0, 0.3, 15)]
# A second round, added after the first 474 pairs were labelled (37 % same, the JWST pool far
# fewer): more TweetEval pairs from the high bands, to bring the classes closer to balance.
# Drawn after the first round, so the first round's pairs are unchanged.
ROUND2_TWEETEVAL = [(0.8, 1.01, 40), (0.7, 0.8, 40)]
# Pairs at or above this cosine are listed in full; below it bands are filled by sampling
# random pairs (a 10,000-text pool has 50 million).
ENUMERATE_FROM = 0.4

STOP = set("""a an the and or but if then so of to in on at by for with from as is are was were be been
being it its this that these those i me my we our you your he she they them his her their not no do does
did have has had will would can could should just about into over than too very up out what when where who
why how all any some more most s t rt amp via http https co""".split())


def load_pools(rng):
    ood = [json.loads(l) for l in (FIX / "out-of-domain" / "labelled.jsonl").read_text().splitlines() if l.strip()]
    with gzip.open(FIX / "tweeteval-sentiment" / "train.jsonl.gz", "rt") as f:
        train = [json.loads(l) for l in f if l.strip()]
    pick = np.sort(rng.choice(len(train), size=TRAIN_SAMPLE, replace=False))
    train = [train[k] for k in pick]
    return [
        ("out-of-domain", "out-of-domain/labelled.jsonl", [(r["id"], r["text"].strip()) for r in ood], BANDS_OOD, []),
        ("tweeteval-train", "tweeteval-sentiment/train.jsonl.gz", [(r["id"], r["text"].strip()) for r in train],
         BANDS_TWEETEVAL, ROUND2_TWEETEVAL),
    ]


def norm(text):
    t = re.sub(r"https?://\S*", " ", text.lower())
    t = re.sub(r"(\.\.\.|…)\s*$", " ", t.strip())
    t = re.sub(r"@\w*", " ", t)
    return re.sub(r"[^a-z0-9#]+", " ", t).strip()


def words(text):
    return [w for w in norm(text).split() if w not in STOP and len(w) > 1]


def tfidf_matrix(texts):
    """Rows of unit-length word TF-IDF vectors (sublinear tf, smoothed idf), sparse."""
    docs = [Counter(words(t)) for t in texts]
    df = Counter(w for d in docs for w in d)
    vocab = {w: i for i, w in enumerate(sorted(df))}
    n = len(texts)
    rows, cols, vals = [], [], []
    for i, d in enumerate(docs):
        v = {vocab[w]: (1 + math.log(c)) * math.log((1 + n) / (1 + df[w])) for w, c in d.items()}
        norm_ = math.sqrt(sum(x * x for x in v.values())) or 1.0
        for k, x in sorted(v.items()):
            rows.append(i)
            cols.append(k)
            vals.append(x / norm_)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n, len(vocab)), dtype=np.float64)


def too_close(a, b):
    na, nb = norm(a), norm(b)
    return na == nb or na.startswith(nb) or nb.startswith(na)


def embed_cached(embedder, texts, cache):
    """The embeddings of `texts`, kept in `cache` (a folder) when one is given: a rerun of the
    script then skips the ~4 minutes of encoding 10,000 tweets on two cores."""
    if not cache:
        return embedder.embed(texts).numpy()
    key = hashlib.sha256("\n".join(texts).encode() + str(embedder.max_length).encode()).hexdigest()[:16]
    path = pathlib.Path(cache) / f"paraphrase-emb-{key}.npy"
    if path.exists():
        return np.load(path)
    emb = embedder.embed(texts).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def candidates(embedder, cache=None):
    rng = np.random.default_rng(SEED)
    out = []
    for pool, path, rows, bands, round2 in load_pools(rng):
        rows = [(i, t) for i, t in rows if len(t.split()) >= 4]
        # First occurrence of each exact text only.
        seen, kept = set(), []
        for i, t in rows:
            if t not in seen:
                seen.add(t)
                kept.append((i, t))
        ids = [i for i, _ in kept]
        texts = [t for _, t in kept]
        n = len(texts)
        emb = embed_cached(embedder, texts, cache)
        tf = tfidf_matrix(texts)
        uses = Counter()
        chosen = set()

        def cos(i, j):
            return float(emb[i] @ emb[j])

        def take(pairs, n_want, stratum):
            got = 0
            for i, j in pairs:
                if got == n_want:
                    break
                i, j = (int(i), int(j)) if i < j else (int(j), int(i))
                if i == j or (i, j) in chosen or uses[i] >= MAX_USES or uses[j] >= MAX_USES:
                    continue
                if too_close(texts[i], texts[j]):
                    continue
                chosen.add((i, j))
                uses[i] += 1
                uses[j] += 1
                got += 1
                out.append({"pool": pool, "path": path, "stratum": stratum,
                            "id_a": ids[i], "id_b": ids[j], "a": texts[i], "b": texts[j],
                            "cos": cos(i, j), "tfidf": float(tf[i].multiply(tf[j]).sum())})
            return got

        # Every pair with cosine >= ENUMERATE_FROM, and every pair with TF-IDF cosine >= TFIDF_MIN.
        high = []
        for s0 in range(0, n, 2000):
            block = emb[s0:s0 + 2000] @ emb.T
            ii, jj = np.nonzero(block >= ENUMERATE_FROM)
            keep = ii + s0 < jj
            high.append(np.stack([ii[keep] + s0, jj[keep], block[ii[keep], jj[keep]]], axis=1))
        high = np.concatenate(high)
        tt = (tf @ tf.T).tocoo()
        keep = (tt.row < tt.col) & (tt.data >= TFIDF_MIN)
        lexical = np.stack([tt.row[keep], tt.col[keep]], axis=1)
        lexical = lexical[np.lexsort((lexical[:, 1], lexical[:, 0]))]
        rng.shuffle(lexical)
        counts = {"texts": n, "tfidf": take(lexical, TFIDF_N, f"tfidf>={TFIDF_MIN}")}
        rounds = [(lo, hi, n_want, "") for lo, hi, n_want in bands] + \
                 [(lo, hi, n_want, " round 2") for lo, hi, n_want in round2]
        for lo, hi, n_want, suffix in rounds:
            name = (f"{lo:.1f}-{min(hi, 1.0):.1f}" if lo > -1 else f"<{hi:.1f}") + suffix
            if lo >= ENUMERATE_FROM:
                band = high[(high[:, 2] >= lo) & (high[:, 2] < hi)][:, :2].astype(np.int64)
                band = band[np.lexsort((band[:, 1], band[:, 0]))]
                rng.shuffle(band)
            else:
                # Random pairs, kept while their cosine falls in the band.
                r = rng.integers(0, n, size=(200_000, 2))
                c = np.einsum("ij,ij->i", emb[r[:, 0]], emb[r[:, 1]])
                band = r[(c >= lo) & (c < hi) & (r[:, 0] != r[:, 1])]
            counts[name] = take(band, n_want, f"minilm {name}")
        print(pool, counts, file=sys.stderr)
    for c in out:
        c["key"] = f"{c['pool']}:{c['id_a']}|{c['id_b']}"
    # One fixed shuffled order for the listing and the fixture (strata and pools mixed).
    order = rng.permutation(len(out))
    return [out[k] for k in order]


def read_labels(path):
    labels = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, label = line.split("\t")[:2]
        labels[key] = label.strip() == "1"
    return labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listing", help="write the blind listing for labelling here and stop")
    ap.add_argument("--labels", default=str(OUT_DIR / "labels.tsv"))
    ap.add_argument("--out", default=str(OUT_DIR / "pairs.jsonl"))
    ap.add_argument("--cache", help="keep the pools' embeddings in this folder between runs")
    ap.add_argument("--unlabelled-only", action="store_true",
                    help="with --listing: list only the candidates that labels.tsv lacks")
    args = ap.parse_args()

    cands = candidates(Embedder(), args.cache)
    if args.listing:
        known = read_labels(pathlib.Path(args.labels)) if args.unlabelled_only else {}
        with open(args.listing, "w") as f:
            for n, c in enumerate(cands):
                if c["key"] in known:
                    continue
                f.write(f"## {n}\t{c['key']}\nA: {c['a']}\nB: {c['b']}\n\n")
        print(f"{len(cands)} candidates written to {args.listing}", file=sys.stderr)
        return

    labels = read_labels(pathlib.Path(args.labels))
    missing = [c["key"] for c in cands if c["key"] not in labels]
    if missing:
        sys.exit(f"{len(missing)} candidates have no label in {args.labels}, e.g. {missing[:3]}")
    stale = set(labels) - {c["key"] for c in cands}
    if stale:
        sys.exit(f"{len(stale)} labels match no candidate, e.g. {sorted(stale)[:3]}")
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for c in cands:
            f.write(json.dumps({"a": c["a"], "b": c["b"], "same": labels[c["key"]],
                                "source": f"{c['path']}#{c['id_a']},{c['id_b']} ({c['stratum']})"},
                               ensure_ascii=False) + "\n")
    tally = Counter((c["pool"], labels[c["key"]]) for c in cands)
    print(f"{len(cands)} pairs written to {args.out}: " +
          ", ".join(f"{p} same={s}: {n}" for (p, s), n in sorted(tally.items())), file=sys.stderr)
    strata = Counter((c["pool"], c["stratum"], labels[c["key"]]) for c in cands)
    for (p, s, y), n in sorted(strata.items()):
        print(f"  {p:14s} {s:18s} same={y!s:5s} {n}", file=sys.stderr)


if __name__ == "__main__":
    main()
