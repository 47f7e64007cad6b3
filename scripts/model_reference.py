"""Reference outputs of Hugging Face `transformers` for flagship-model's parity tests.

Run once (outputs are committed under fixtures/model/; the Rust tests need no Python):

    .venv/bin/python scripts/model_reference.py               # everything
    .venv/bin/python scripts/model_reference.py --only mpnet  # one part, the others untouched

1. MiniLM (the default base model in .venv/base-model): token ids of a few real-looking
   tweets from its tokenizer, and the encoder's last hidden state for them (padded batch).
2. Tiny random BERT, RoBERTa and DistilBERT sequence classifiers (2 layers, 16 wide, vocab 1000),
   saved as checkpoints with their last hidden state and logits for a padded batch of ids, so
   each family's layer names, position scheme and classification head are checked too.
3. A tiny random MPNet sequence classifier, the same way, with rows long enough (up to 150
   tokens) that every relative-position bucket of its shared attention bias is used (16 never
   occurs: distance 0 is bucket 0), the last one with distances at or past max_distance 128
   included; and transformers' bucket of every relative position in -300..300.
"""
import argparse
import json
import pathlib

import torch
from safetensors.torch import save_file
from transformers import (AutoConfig, AutoModel, AutoModelForSequenceClassification,
                          AutoTokenizer, BertConfig, DistilBertConfig, MPNetConfig, RobertaConfig)
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "model"
BASE = ROOT / ".venv" / "base-model"
MAX_LENGTH = 64

TEXTS = [
    "Webb's first deep field is breathtaking 😍 #JWST",
    "Why is the @NASAWebb feed down AGAIN?? I can't see anything https://t.co/abc123",
    "",
    "The mirror alignment &amp; cooldown took months... worth it?",
    "  lots   of\tspaces\nand a newline  ",
    "Ünïcödé and CJK 望遠鏡 and numbers 6.5m 18 segments",
    "long " * 80 + "end",
    "@user thanks for the update, when do we get the next images?",
]


def minilm():
    tok = AutoTokenizer.from_pretrained(BASE)
    model = AutoModel.from_pretrained(BASE, attn_implementation="eager").eval()
    batch = tok(TEXTS, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    save_file({
        "input_ids": batch["input_ids"].contiguous(),
        "attention_mask": batch["attention_mask"].contiguous(),
        "last_hidden_state": hidden.contiguous(),
    }, OUT / "minilm-reference.safetensors")
    (OUT / "minilm-reference.json").write_text(json.dumps({
        "texts": TEXTS, "max_length": MAX_LENGTH,
        "ids": [[int(i) for i, m in zip(ids, mask) if m] for ids, mask in
                zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())],
    }, ensure_ascii=False, indent=1) + "\n")


def tiny(name, config, lengths=(12, 7, 3, 12), extra=None):
    torch.manual_seed(7)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        # Wide random weights, LayerNorm included, so every tensor matters to the output.
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    pad = config.pad_token_id
    g = torch.Generator().manual_seed(11)
    ids = torch.full((len(lengths), max(lengths)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, config.vocab_size, (n,), generator=g)
        mask[row, :n] = 1
    with torch.no_grad():
        encoder = getattr(model, config.model_type)
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = model(input_ids=ids, attention_mask=mask).logits
    folder = OUT / f"tiny-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    save_file({"input_ids": ids, "attention_mask": mask, "last_hidden_state": hidden.contiguous(),
               "logits": logits.contiguous(), **(extra or {})}, folder / "reference.safetensors")


def tiny_mpnet():
    config = MPNetConfig(vocab_size=1000, num_hidden_layers=2, num_attention_heads=2, hidden_size=16,
                         intermediate_size=32, max_position_embeddings=160,
                         relative_attention_num_buckets=32, num_labels=2)
    relative = torch.arange(-300, 301, dtype=torch.long)
    buckets = MPNetEncoder.relative_position_bucket(relative, num_buckets=32, max_distance=128)
    # Every bucket but 16 (distance 0 is bucket 0 in both directions).
    assert sorted(set(buckets.tolist())) == [b for b in range(32) if b != 16]
    # Positions start at pad + 1 = 2, so 158 tokens fit; 150 reaches distance 149 > 128.
    tiny("mpnet", config, lengths=(150, 60, 12, 3),
         extra={"relative_position": relative, "relative_bucket": buckets.contiguous()})


def checkpoint(folder, out):
    """Any checkpoint folder's reference on TEXTS (the full-size check of a base model, e.g.
    `cargo xtask check-teacher`): token ids and the last hidden state, f32, eager attention."""
    folder, out = pathlib.Path(folder), pathlib.Path(out)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    batch = tok(TEXTS, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).last_hidden_state
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({
        "input_ids": batch["input_ids"].contiguous(),
        "attention_mask": batch["attention_mask"].contiguous(),
        "last_hidden_state": hidden.contiguous(),
    }, out)
    out.with_suffix(".json").write_text(json.dumps({
        "texts": TEXTS, "max_length": MAX_LENGTH, "checkpoint": str(folder),
        "ids": [[int(i) for i, m in zip(ids, mask) if m] for ids, mask in
                zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())],
    }, ensure_ascii=False, indent=1) + "\n")
    print(f"{out}: {model.config.model_type}, last hidden state {tuple(hidden.shape)}")


PARTS = ["minilm", "bert", "roberta", "distilbert", "mpnet"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="write only this part (repeatable); default: all")
    parser.add_argument("--checkpoint", help="instead: the reference of this checkpoint folder")
    parser.add_argument("--out", help="with --checkpoint: the reference's safetensors file")
    args = parser.parse_args()
    if args.checkpoint:
        checkpoint(args.checkpoint, args.out)
        return
    parts = set(args.only or PARTS)
    OUT.mkdir(parents=True, exist_ok=True)
    if "minilm" in parts:
        minilm()
    common = dict(vocab_size=1000, num_hidden_layers=2, num_attention_heads=2, hidden_size=16,
                  intermediate_size=32, max_position_embeddings=40, num_labels=2)
    if "bert" in parts:
        tiny("bert", BertConfig(**common))
    if "roberta" in parts:
        tiny("roberta", RobertaConfig(**common, pad_token_id=1, type_vocab_size=1))
    if "distilbert" in parts:
        tiny("distilbert", DistilBertConfig(vocab_size=1000, n_layers=2, n_heads=2, dim=16,
                                            hidden_dim=32, max_position_embeddings=40, num_labels=2))
    if "mpnet" in parts:
        tiny_mpnet()
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(ROOT)}  {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
