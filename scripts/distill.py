"""Distillation, measured (issue 31): the teacher (MPNet-base), its soft labels, and MiniLM
students with and without them, each trained by `flagship train` and scored on the held-out
40 % set and the out-of-domain set exactly as scripts/ablation.py scores its arms (thresholds
from each model's own validation; nothing tunes on a scored set).

    python3 scripts/distill.py [--only ARM ...] [--flagship PATH]

Writes data/distill/<arm>/ (models, predictions), data/distill/results.json and, when missing,
each teacher's soft labels with their manifest (fixtures/teacher/soft-labels.jsonl.gz from
`teacher`, soft-labels-2.jsonl.gz from `teacher-2`: commit them); prints the table
docs/model.md shows. An arm whose model folder exists is not retrained; a checkpointed arm that
was stopped goes on from its checkpoint when the script is run again.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ablation import OOD, ROOT, TE, predict, score  # noqa: E402

OUT = ROOT / "data" / "distill"
SOFT = ROOT / "fixtures" / "teacher" / "soft-labels.jsonl.gz"
SOFT_2 = ROOT / "fixtures" / "teacher" / "soft-labels-2.jsonl.gz"
UNLABELLED = ROOT / "fixtures" / "teacher" / "unlabelled.jsonl"
TEACHER_BASE = ROOT / ".venv" / "teacher-mpnet"


def changed(flags, **values):
    """`flags` with the values of the named flags replaced (`max_length` names `--max-length`)."""
    out = list(flags)
    for name, value in values.items():
        out[out.index("--" + name.replace("_", "-")) + 1] = value
    return out


ONE_EPOCH = ["--epochs", "1", "--batch-size", "32", "--max-length", "64", "--learning-rate", "5e-5",
             "--pooling", "mean", "--classes", "3", "--operating-point", "f2"]
REF = ["--limit", "20000"] + ONE_EPOCH
TAUGHT = ["--teacher-labels", str(SOFT)]
TAUGHT_2 = ["--teacher-labels", str(SOFT_2)]
# Each teacher arm and the soft labels it writes (commit them: fixtures/teacher/SOURCE.md).
TEACHERS = {"teacher": SOFT, "teacher-2": SOFT_2}
ARMS = {
    # Checkpointed: an interrupted teacher run (about 50 minutes here) goes on where it stopped
    # when the script is run again (its dropout then reseeded each step: docs/model.md).
    "teacher": ("MPNet-base (110 M), all 45.6k, 1 epoch, length 64",
                ONE_EPOCH + ["--base", str(TEACHER_BASE), "--checkpoint-every", "10m"]),
    # The longer teacher the first one's figures asked for (about 2 h on two cores: run at a
    # low priority across sessions, `nice -n 19`, each resuming from the last checkpoint).
    "teacher-2": ("MPNet-base (110 M), all 45.6k, 2 epochs, length 96",
                  changed(ONE_EPOCH, epochs="2", max_length="96") + ["--base", str(TEACHER_BASE), "--checkpoint-every", "10m"]),
    "minilm": ("MiniLM-L6 (22 M), all 45.6k, 1 epoch, length 64", ONE_EPOCH),
    "student": ("… + the teacher's soft labels (T 2, alpha 0.5) and 560 unlabelled posts",
                ONE_EPOCH + TAUGHT),
    "student-2": ("MiniLM, all, 1 epoch, length 64 + the two-epoch teacher's soft labels (T 2, alpha 0.5)",
                  ONE_EPOCH + TAUGHT_2),
    "student-ref": ("MiniLM, the 20k reference arm + soft labels (T 2, alpha 0.5)", REF + TAUGHT),
    # The temperature and the weight of the teacher's term, on the 20k reference arm (about
    # 4 minutes each in a release build), beside the same arm without the teacher.
    "minilm-ref": ("MiniLM, the 20k reference arm, no soft labels", REF),
    "student-ref-t1": ("… + soft labels at T 1 (alpha 0.5)", REF + TAUGHT + ["--temperature", "1"]),
    "student-ref-t4": ("… + soft labels at T 4 (alpha 0.5)", REF + TAUGHT + ["--temperature", "4"]),
    "student-ref-a09": ("… + soft labels, alpha 0.9 (T 2)", REF + TAUGHT + ["--alpha", "0.9"]),
    "student-soft": ("MiniLM, all, soft labels only (alpha 1.0)", ONE_EPOCH + TAUGHT + ["--alpha", "1.0"]),
    # Issue 32: a shallower student serves faster; the teacher's labels should matter more.
    "minilm-l3": ("MiniLM's first 3 of 6 layers, all, 1 epoch, length 64", ONE_EPOCH + ["--layers", "3"]),
    "student-l3": ("… + the teacher's soft labels (T 2, alpha 0.5) and 560 unlabelled posts",
                   ONE_EPOCH + TAUGHT + ["--layers", "3"]),
    "student-l4": ("MiniLM's first 4 of 6 layers + the soft labels", ONE_EPOCH + TAUGHT + ["--layers", "4"]),
}


def soft_labels(flagship, teacher, soft):
    """Writes `soft`, the labels of the trained arm `teacher`, unless it exists."""
    if soft.exists():
        return
    if not (OUT / teacher / "flagship.json").exists():
        sys.exit(f"{soft.name} comes from the arm {teacher!r}: run `--only {teacher}` first")
    t0 = time.time()
    print("== teacher-labels", file=sys.stderr, flush=True)
    rel = lambda p: str(p.relative_to(ROOT))  # the manifest records the paths as given
    subprocess.run([flagship, "teacher-labels", "--model", rel(OUT / teacher),
                    "--input", rel(TE / "train.jsonl.gz"), "--input", rel(UNLABELLED),
                    "--holdout", rel(TE / "heldout-40.jsonl"), "--holdout", rel(OOD),
                    "--holdout", rel(TE / "val.jsonl"), "--out", rel(soft)], check=True, cwd=ROOT)
    print(f"   teacher-labels: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)


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
    for arm, (what, flags) in ARMS.items():
        if a.only and arm not in a.only:
            continue
        for teacher, soft in TEACHERS.items():
            if str(soft) in flags:
                soft_labels(a.flagship, teacher, soft)
        d = OUT / arm
        if not d.exists():
            t0 = time.time()
            print(f"== {arm}: {what}", file=sys.stderr, flush=True)
            subprocess.run([a.flagship, "train", "--train", str(TE / "train.jsonl.gz"),
                            "--val", str(TE / "val.jsonl"), "--out", str(d)] + flags, check=True)
            print(f"   {arm}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        card = json.loads((d / "flagship.json").read_text())
        t0 = time.time()
        preds = {k: predict(a.flagship, d, v, d / f"{k}.jsonl") for k, v in sets.items()}
        scoring = time.time() - t0
        t = card["threshold"]
        r = {"what": what, "threshold": t, "train_seconds": round(card["training"]["seconds"], 1),
             **{k: score(*preds[k], t) for k in preds if k != "val"}}
        if scoring > 5:  # freshly scored: the three sets' posts per second
            n = sum(len(p[0]) for p in preds.values())
            r["predict_per_second"] = round(n / scoring, 1)
        elif arm in results and "predict_per_second" in results[arm]:
            r["predict_per_second"] = results[arm]["predict_per_second"]
        if "distillation" in card:
            g = card["distillation"]["guard"]
            r["soft"] = {"matched": g["matched"], "unlabelled": g["unlabelled"],
                         "held_out": g["held_out"]}
        results[arm] = r
        results_path.write_text(json.dumps(results, indent=1))
    print("| arm | what | held-out F2 | AUC | OOD F2 | OOD AUC | train s | predict posts/s |")
    print("|---|---|---|---|---|---|---|---|")
    for arm, r in results.items():
        h, o = r.get("heldout", {}), r.get("ood", {})
        print(f"| {arm} | {r['what']} | {h.get('f2', '')} | {h.get('auc', '')} | {o.get('f2', '')} | "
              f"{o.get('auc', '')} | {r['train_seconds']} | {r.get('predict_per_second', '')} |")


if __name__ == "__main__":
    main()
