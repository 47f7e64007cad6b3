"""The Hugging Face side of `cargo xtask bench train|predict`: same checkpoint, texts, batch
size, max length and steps as flagship's side; prints one JSON line.

    .venv/bin/python scripts/bench_model.py train --base DIR --data FILE --steps 30 --batch-size 32 --max-length 64
    .venv/bin/python scripts/bench_model.py predict --base DIR --data FILE --rows 2000 --batch-size 64 --max-length 64

`--bf16`: bf16 autocast on the CPU too (the Trainer's `bf16=True`; on CUDA it is always on).
"""
import argparse
import gzip
import json
import tempfile
import time

import torch
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments)


def rows(path, n):
    op = gzip.open if path.endswith(".gz") else open
    out = []
    with op(path, "rt") as f:
        for line in f:
            r = json.loads(line)
            out.append((r["text"], int(r["label"] <= 1)))
            if len(out) == n:
                break
    return out


def train(a):
    tok = AutoTokenizer.from_pretrained(a.base)
    data = rows(a.data, a.steps * a.batch_size)
    ds = [dict(tok(t, truncation=True, max_length=a.max_length), labels=y) for t, y in data]
    model = AutoModelForSequenceClassification.from_pretrained(a.base, num_labels=2)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=a.steps, per_device_train_batch_size=a.batch_size,
                                 learning_rate=5e-5, weight_decay=0.01, warmup_steps=max(1, a.steps // 10), max_grad_norm=1.0,
                                 train_sampling_strategy="group_by_length", save_strategy="no", report_to=[], logging_steps=a.steps,
                                 seed=42, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
                                 bf16=a.bf16 or torch.cuda.is_available(), disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=ds,
                          data_collator=DataCollatorWithPadding(tok))
        t0 = time.perf_counter()
        trainer.train()
        secs = time.perf_counter() - t0
    return {"examples": len(ds), "seconds": secs, "examples_per_second": len(ds) / secs}


def predict(a):
    tok = AutoTokenizer.from_pretrained(a.base)
    texts = [t for t, _ in rows(a.data, a.rows)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # --layers N: the base's first N layers only (transformers drops the rest when loading).
    extra = {"num_hidden_layers": a.layers} if a.layers else {}
    model = AutoModelForSequenceClassification.from_pretrained(a.base, num_labels=2, **extra).eval().to(device)
    out = {}
    for name, order in [("input_order", texts), ("length_sorted", sorted(texts, key=len))]:
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=a.bf16 or device == "cuda"):
            for i in range(0, len(order), a.batch_size):
                b = tok(order[i:i + a.batch_size], padding=True, truncation=True, max_length=a.max_length,
                        return_tensors="pt").to(device)
                model(**b).logits.float().softmax(-1)[:, 1].cpu()
        secs = time.perf_counter() - t0
        out[name] = {"seconds": secs, "examples_per_second": len(texts) / secs}
    return {"examples": len(texts), **out,
            "length_sorted_per_second": out["length_sorted"]["examples_per_second"],
            "examples_per_second": out["input_order"]["examples_per_second"]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["train", "predict"])
    p.add_argument("--base", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--layers", type=int, help="predict: keep the base's first N layers only")
    a = p.parse_args()
    r = train(a) if a.what == "train" else predict(a)
    r.update(peer="transformers", torch_threads=torch.get_num_threads(), bf16=a.bf16 or torch.cuda.is_available(),
             device="cuda" if torch.cuda.is_available() else "cpu")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
