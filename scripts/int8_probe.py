"""Why serving stays bf16 (issue 32): int8 matrix products on this CPU, measured with the ops a
tch 0.24 program can reach (`torch._int_mm`: int8 × int8 → int32, and `_weight_int8pack_mm`:
int8 weights with bf16 activations), against the bf16 product `predict` uses. The MiniLM's four
products per layer at a typical micro-batch (64 posts × 40 tokens), with dynamic per-row
quantisation of the activations and per-channel weights, as FBGEMM's dynamic int8 linear does.

    .venv/bin/python scripts/int8_probe.py [--threads 2]

Prints milliseconds per product and the ratio to bf16 (below 1 is faster), and the largest
difference from the f32 product. Not a test.
"""
import argparse
import time

import torch


def bench(f, n=30):
    for _ in range(3):
        f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=64 * 40)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    m = a.rows
    print(f"torch {torch.__version__}, {a.threads} threads, {m} rows")
    print("| product | bf16 ms | int8 product alone | int8 with (de)quantisation | int8 weights, bf16 activations | max abs diff vs f32 (int8) |")
    print("|---|---|---|---|---|---|")
    total = {"bf16": 0.0, "int8": 0.0, "w8": 0.0}
    for name, (k, n) in {"query+key+value": (384, 1152), "attention out": (384, 384),
                         "ffn in": (384, 1536), "ffn out": (1536, 384)}.items():
        x = torch.randn(m, k)
        w = torch.randn(n, k) * 0.05
        b = torch.randn(n) * 0.1
        xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()
        ws = w.abs().amax(1, keepdim=True) / 127
        wq = (w / ws).round().to(torch.int8)
        wqt = wq.t()
        xq0 = (x / (x.abs().amax(1, keepdim=True) / 127)).round().to(torch.int8)

        def int8(xx):
            s = xx.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127
            xq = (xx / s).round().to(torch.int8)
            return torch._int_mm(xq, wqt).float() * (s * ws.t()) + b

        t_bf = bench(lambda: torch.nn.functional.linear(xb, wb, bb))
        t_raw = bench(lambda: torch._int_mm(xq0, wqt))
        t_q = bench(lambda: int8(xb.float()).bfloat16())
        try:
            scales = ws.squeeze(1).bfloat16()
            t_w8 = bench(lambda: torch._weight_int8pack_mm(xb, wq, scales) + bb)
        except RuntimeError:
            t_w8 = float("nan")
        err = (int8(x) - torch.nn.functional.linear(x, w, b)).abs().max().item()
        total["bf16"] += t_bf
        total["int8"] += t_q
        total["w8"] += t_w8
        print(f"| {name} {m}×{k}·{k}×{n} | {t_bf:.2f} | {t_raw:.2f} ({t_raw / t_bf:.2f}×) | "
              f"{t_q:.2f} ({t_q / t_bf:.2f}×) | {t_w8:.2f} ({t_w8 / t_bf:.2f}×) | {err:.3f} |")
    print(f"| a layer's four products | {total['bf16']:.2f} | | {total['int8']:.2f} "
          f"({total['int8'] / total['bf16']:.2f}×) | {total['w8']:.2f} ({total['w8'] / total['bf16']:.2f}×) | |")


if __name__ == "__main__":
    main()
