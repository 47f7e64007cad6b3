//! Dropout in training, its keep-mask drawn on every thread.
//!
//! libtorch's CPU dropout (`noise.bernoulli_(1 − p)`, then `input * noise / (1 − p)`) draws
//! every element from one Mersenne Twister, on one thread, while the other threads wait: on
//! this 2-core machine 5 % of a fine-tuning step's samples, with the second core idle beside
//! them. Here the same inverted dropout takes its mask from SplitMix64 — element `i` keeps its
//! value when 16 bits of the `i / 4`-th output of a stream seeded from libtorch's generator
//! (so `tch::manual_seed` still reproduces a run) are at least `p · 2¹⁶` — filled in chunks
//! by libtorch's intra-op thread count ([`crate::threads::for_chunks`]).
//!
//! Attention's own dropout (of the softmax weights) is inside
//! `scaled_dot_product_attention`, which on the CPU with a dropout runs its f32 "math"
//! path; [`attention`] is that path (q·kᵀ scaled, the mask, softmax, dropout, ·v, in f32)
//! with this mask. Without dropout (scoring, or `p = 0`) both fall back to libtorch's.
//!
//! Elsewhere (CUDA, or a tensor neither f32 nor bf16) libtorch's dropout runs unchanged.

use tch::{Device, Kind, Tensor};

use crate::encoder::MASKED;

/// `x` with each element zeroed with probability `p` and the rest scaled by `1 / (1 − p)`
/// when `train`; `x` itself otherwise.
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    if p >= 1.0 || x.device() != Device::Cpu || !matches!(x.kind(), Kind::Float | Kind::BFloat16) {
        return x.dropout(p, train);
    }
    seeded(x, p, seed())
}

/// [`dropout`] in training on the CPU (f32 or bf16 `x`), its mask seeded `seed`.
fn seeded(x: &Tensor, p: f64, seed: u64) -> Tensor {
    x * keep_mask(&x.size(), x.kind(), p, seed)
}

/// Scaled dot-product attention in training: `q`, `k`, `v` `[batch, heads, seq, dim]`, `mask`
/// as [`crate::encoder::Layer::forward`] takes it (bool, true on the keys kept, or additive),
/// dropout `p` on the attention weights. Returns `q`'s kind.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, p: f64) -> Tensor {
    if q.device() != Device::Cpu {
        // CUDA keeps its fused kernels, dropout included.
        return Tensor::scaled_dot_product_attention(q, k, v, mask, p, false, None, false);
    }
    let kind = q.kind();
    let dim = *q.size().last().expect("[…, dim]") as f64;
    let (qf, kf, vf) = (
        q.to_kind(Kind::Float),
        k.to_kind(Kind::Float),
        v.to_kind(Kind::Float),
    );
    let mut scores = qf.matmul(&kf.transpose(-2, -1)) * (1.0 / dim.sqrt());
    if let Some(m) = mask {
        scores = if m.kind() == Kind::Bool {
            scores.masked_fill(&m.logical_not(), MASKED)
        } else {
            scores + m.to_kind(Kind::Float)
        };
    }
    let weights = dropout(&scores.softmax(-1, Kind::Float), p, true);
    weights.matmul(&vf).to_kind(kind)
}

/// A seed from libtorch's default CPU generator.
fn seed() -> u64 {
    Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]) as u64
}

/// SplitMix64's `j`-th output from `seed`.
fn splitmix(seed: u64, j: u64) -> u64 {
    let mut z = seed.wrapping_add(j.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 16-bit threshold below which an element is dropped: `p · 2¹⁶`, rounded.
fn threshold(p: f64) -> u32 {
    (p * 65536.0).round().clamp(0.0, 65536.0) as u32
}

/// Whether element `i` of the mask seeded `seed` keeps its value.
fn kept(seed: u64, i: usize, threshold: u32) -> bool {
    let bits = splitmix(seed, (i / 4) as u64) >> (16 * (i % 4));
    (bits & 0xFFFF) as u32 >= threshold
}

/// `value` rounded to bf16 (to nearest, ties to even), as its bits.
fn bf16_bits(value: f32) -> u16 {
    let b = value.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The mask `shape` (`kind`: f32 or bf16, on the CPU): `1 / (1 − p)` where kept, else 0.
fn keep_mask(shape: &[i64], kind: Kind, p: f64, seed: u64) -> Tensor {
    let out = Tensor::empty(shape, (kind, Device::Cpu));
    let n = out.numel();
    let thr = threshold(p);
    let scale = (1.0 / (1.0 - p)) as f32;
    let ptr = out.data_ptr() as usize;
    let threads = tch::get_num_threads().max(1) as usize;
    crate::threads::for_chunks(&[n], threads, &|_, s, e| {
        match kind {
            Kind::Float => {
                // SAFETY: `s..e` lies within the mask's `n` elements; chunks are disjoint.
                let out =
                    unsafe { std::slice::from_raw_parts_mut((ptr as *mut f32).add(s), e - s) };
                for (k, o) in out.iter_mut().enumerate() {
                    *o = if kept(seed, s + k, thr) { scale } else { 0.0 };
                }
            }
            _ => {
                let one = bf16_bits(scale);
                // SAFETY: as above, two bytes an element.
                let out =
                    unsafe { std::slice::from_raw_parts_mut((ptr as *mut u16).add(s), e - s) };
                for (k, o) in out.iter_mut().enumerate() {
                    *o = if kept(seed, s + k, thr) { one } else { 0 };
                }
            }
        }
        0.0
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tests seed their masks themselves: libtorch's generator is shared by every test
    // running at the same time.

    #[test]
    fn the_mask_drops_p_of_the_elements_and_scales_the_rest() {
        for kind in [Kind::Float, Kind::BFloat16] {
            let x = Tensor::ones([300, 1000], (kind, Device::Cpu));
            let y = seeded(&x, 0.1, 42);
            assert_eq!(y.kind(), kind);
            let dropped = y
                .eq(0.0)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
            // 300,000 draws: the share dropped is 0.1 ± 0.0017 (3 σ).
            assert!((dropped - 0.1).abs() < 0.0017, "{kind:?}: {dropped}");
            let kept = y.masked_select(&y.ne(0.0)).to_kind(Kind::Float);
            let (lo, hi) = (kept.min().double_value(&[]), kept.max().double_value(&[]));
            assert!(
                (lo - 1.0 / 0.9).abs() < 3e-3 && lo == hi,
                "{kind:?}: {lo} {hi}"
            );
            // Inverted dropout keeps the mean.
            let mean = y.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            assert!((mean - 1.0).abs() < 0.005, "{kind:?}: {mean}");
        }
        // Neighbouring elements are independent (four share one 64-bit draw).
        let m = keep_mask(&[400_000], Kind::Float, 0.5, 7).gt(0.0);
        let v = Vec::<bool>::try_from(&m).unwrap();
        let both = v.chunks(2).filter(|c| c[0] && c[1]).count() as f64 / 200_000.0;
        assert!((both - 0.25).abs() < 0.005, "{both}");
    }

    #[test]
    fn a_seed_gives_one_mask_and_no_dropout_gives_the_input() {
        let x = Tensor::ones([64, 64], (Kind::Float, Device::Cpu));
        assert!(seeded(&x, 0.3, 5).equal(&seeded(&x, 0.3, 5)));
        assert!(!seeded(&x, 0.3, 5).equal(&seeded(&x, 0.3, 6)));
        // Not training, or p = 0: the input itself (no draw from the generator).
        assert!(dropout(&x, 0.3, false).equal(&x));
        assert!(dropout(&x, 0.0, true).equal(&x));
    }

    #[test]
    fn bf16_rounding_is_to_nearest() {
        for v in [1.0f32, 1.0 / 0.9, 3.5, -2.75, 1e-3] {
            let want = Tensor::from(v)
                .to_kind(Kind::BFloat16)
                .to_kind(Kind::Float)
                .double_value(&[]) as f32;
            assert_eq!(f32::from_bits(u32::from(bf16_bits(v)) << 16), want, "{v}");
        }
    }

    #[test]
    fn attention_without_dropout_is_libtorchs() {
        let _rng = crate::torch_rng();
        tch::manual_seed(1);
        let opts = (Kind::Float, Device::Cpu);
        let (q, k, v) = (
            Tensor::randn([2, 3, 5, 8], opts),
            Tensor::randn([2, 3, 5, 8], opts),
            Tensor::randn([2, 3, 5, 8], opts),
        );
        let keep =
            Tensor::from_slice(&[true, true, true, false, false, true, true, true, true, true])
                .view([2, 1, 1, 5]);
        // A bool mask (true on the keys kept), and an additive one as MPNet's (a bias, the
        // padded keys at MASKED).
        let bias = Tensor::randn([1, 3, 5, 5], opts)
            + keep
                .zeros_like()
                .to_kind(Kind::Float)
                .masked_fill(&keep.logical_not(), MASKED);
        for mask in [&keep, &bias] {
            let ours = attention(&q, &k, &v, Some(mask), 0.0);
            let theirs = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                Some(mask),
                0.0,
                false,
                None,
                false,
            );
            let d = (ours - theirs).abs().max().double_value(&[]);
            assert!(d < 1e-5, "{:?}: {d}", mask.kind());
        }
    }
}
