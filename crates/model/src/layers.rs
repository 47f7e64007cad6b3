//! The few building blocks the encoders need, with the checkpoint's variable names
//! (`weight`, `bias`) and the optimizer groups fine-tuning wants: weight decay on weights and
//! embeddings, none on biases and LayerNorm.

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// Depth of the head (and BERT's pooler) in [`group`]; embeddings are 0, layer `n` is `n + 1`.
pub const HEAD_DEPTH: usize = 31;
/// Optimizer groups: two per depth, weights then biases and LayerNorm.
pub const GROUPS: usize = 2 * (HEAD_DEPTH + 1);

/// The optimizer group of a variable under `p`: its depth in the network (so layer-wise
/// learning-rate decay can give each layer its rate) and whether it gets weight decay
/// (weights and embeddings do; biases and LayerNorm do not).
pub fn group(p: &Path, decay: bool) -> usize {
    2 * depth(p) + usize::from(!decay)
}

/// Whether an optimizer group gets weight decay.
pub fn decays(group: usize) -> bool {
    group.is_multiple_of(2)
}

/// The depth of an optimizer group (see [`group`]).
pub fn group_depth(group: usize) -> usize {
    group / 2
}

fn depth(p: &Path) -> usize {
    let parts: Vec<&str> = p.components().collect();
    if let Some(n) = parts
        .windows(2)
        .find(|w| w[0] == "layer")
        .and_then(|w| w[1].parse::<usize>().ok())
    {
        return (n + 1).min(HEAD_DEPTH - 1);
    }
    // MPNet's relative position bias, shared by every layer, learns with the embeddings.
    if parts.contains(&"embeddings") || parts.contains(&"relative_attention_bias") {
        0
    } else {
        HEAD_DEPTH
    }
}

/// Whether this CPU multiplies bf16 matrices natively (AVX-512 BF16).
pub fn cpu_has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// How many times as fast as f32 a bf16 product must run here, measured ([`bf16_speedup`]),
/// for `auto` to choose bf16 on a CPU ([`bf16_pays`]): a clear gain, not a tie. (A machine
/// that measures near it may still choose differently from one process to the next; set
/// `model.precision` to pin it.)
pub const BF16_MARGIN: f64 = 1.15;

/// Whether bf16 products pay on this CPU: it multiplies bf16 natively ([`cpu_has_bf16`]), and
/// a served layer's product runs at least [`BF16_MARGIN`] times as fast in bf16 as in f32
/// ([`bf16_speedup`], measured once per process). The flag alone is not enough: an Intel
/// Xeon of 2 cores (a VM of a 5th-generation Xeon with AMX hidden) reports AVX-512 BF16 and
/// ran bf16 products at 0.60–0.68× f32 — predict 180 against 314 texts a second, and
/// `transformers` under bf16 autocast 115 against 192 in f32 (docs/model.md#precision).
pub fn cpu_bf16_pays() -> bool {
    static PAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PAYS.get_or_init(|| {
        if !cpu_has_bf16() {
            return false;
        }
        let speedup = bf16_speedup();
        let pays = bf16_pays(true, speedup);
        if pays {
            tracing::debug!("bf16 products run {speedup:.2}× as fast as f32: `auto` is bf16");
        } else {
            tracing::info!(
                "this CPU has AVX-512 BF16, but bf16 products ran {speedup:.2}× as fast as f32 \
                 here (at least {BF16_MARGIN}× wanted): `auto` is f32"
            );
        }
        pays
    })
}

/// The rule [`cpu_bf16_pays`] applies: the flag, and a measured speed-up of at least
/// [`BF16_MARGIN`].
pub fn bf16_pays(has_bf16: bool, speedup: f64) -> bool {
    has_bf16 && speedup >= BF16_MARGIN
}

/// f32 time ÷ bf16 time of one served product on the CPU: the feed-forward's first (256 token
/// rows, 384 → 1,536, the MiniLM's largest), the bf16 weights cast once and the rows on every
/// call as [`Linear::forward`] serves it; the best of five runs each, alternating, after a
/// warm-up (oneDNN builds a kernel on first use), on the caller's libtorch threads: 30–60 ms
/// here. 0 (f32 wins) if libtorch cannot make the bf16 product. Deterministic inputs: it draws
/// nothing from libtorch's generator, so a seeded run is the same whether or not it measured
/// first.
pub fn bf16_speedup() -> f64 {
    tch::no_grad(|| {
        let (rows, inner, outer) = (256, 384, 1536);
        let f32s = (Kind::Float, tch::Device::Cpu);
        let fill = |n: i64, shape: &[i64]| {
            (Tensor::arange(n, f32s).remainder(97.0) * 0.01 - 0.48).view(shape)
        };
        let x = fill(rows * inner, &[rows, inner]);
        let w = fill(outer * inner, &[outer, inner]);
        let b = Tensor::zeros([outer], f32s);
        let (w16, b16) = (w.to_kind(Kind::BFloat16), b.to_kind(Kind::BFloat16));
        let f32 = || x.f_linear(&w, Some(&b));
        let bf16 = || x.to_kind(Kind::BFloat16).f_linear(&w16, Some(&b16));
        let time = |f: &dyn Fn() -> Result<Tensor, tch::TchError>| {
            let t = std::time::Instant::now();
            f().map(|_| t.elapsed().as_secs_f64())
        };
        let measured = (|| -> Result<f64, tch::TchError> {
            let (_, _) = (f32()?, bf16()?);
            let (mut best32, mut best16) = (f64::MAX, f64::MAX);
            for _ in 0..5 {
                best32 = best32.min(time(&f32)?);
                best16 = best16.min(time(&bf16)?);
            }
            Ok(best32 / best16.max(1e-9))
        })();
        measured.unwrap_or(0.0)
    })
}

/// Arithmetic of the matrix products. Master weights, LayerNorm and softmax stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bfloat16 matrix products (what autocast does on CUDA), f32 everywhere else.
    Bf16,
}

impl Precision {
    /// What a device does best: bf16 on CUDA and on a CPU where it pays ([`cpu_bf16_pays`]:
    /// AVX-512 BF16, and measured faster), else f32.
    pub fn auto(device: tch::Device) -> Precision {
        if device.is_cuda() || cpu_bf16_pays() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// `model.precision` on `device`.
    pub fn of(a: flagship_core::config::Arithmetic, device: tch::Device) -> Precision {
        use flagship_core::config::Arithmetic;
        match a {
            Arithmetic::Auto => Precision::auto(device),
            Arithmetic::F32 => Precision::F32,
            Arithmetic::Bf16 => Precision::Bf16,
        }
    }

    pub(crate) fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

/// `y = x Wᵀ + b`, `W` shaped `[out, in]` as PyTorch stores it.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
    /// The weights cast for a reduced-precision product, kept once the weights are frozen (a
    /// served model): casting 22 M weights per micro-batch would cost as much as a small
    /// batch's product. A trained model casts per step, as autocast does.
    cast: std::sync::OnceLock<(Tensor, Tensor)>,
}

impl Linear {
    pub fn new(p: &Path, in_dim: i64, out_dim: i64) -> Linear {
        Linear {
            weight: p.set_group(group(p, true)).var(
                "weight",
                &[out_dim, in_dim],
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            ),
            bias: p
                .set_group(group(p, false))
                .var("bias", &[out_dim], Init::Const(0.0)),
            cast: std::sync::OnceLock::new(),
        }
    }

    /// One frozen layer doing the work of `parts` (same input): their weights stacked, so
    /// a served model makes one matrix product where it made several (attention's query,
    /// key and value). The output is the parts' outputs side by side, in order.
    pub fn stacked(parts: &[&Linear]) -> Linear {
        tch::no_grad(|| {
            let weights: Vec<&Tensor> = parts.iter().map(|l| &l.weight).collect();
            let biases: Vec<&Tensor> = parts.iter().map(|l| &l.bias).collect();
            Linear {
                weight: Tensor::cat(&weights, 0).set_requires_grad(false),
                bias: Tensor::cat(&biases, 0).set_requires_grad(false),
                cast: std::sync::OnceLock::new(),
            }
        })
    }

    pub fn forward(&self, xs: &Tensor, precision: Precision) -> Tensor {
        match precision {
            Precision::F32 => xs.linear(&self.weight, Some(&self.bias)),
            p if !self.weight.requires_grad() => {
                let (w, b) = self.cast.get_or_init(|| {
                    tch::no_grad(|| (self.weight.to_kind(p.kind()), self.bias.to_kind(p.kind())))
                });
                padded_rows(&xs.to_kind(p.kind()), |x| x.linear(w, Some(b)))
            }
            p => xs.to_kind(p.kind()).linear(
                &self.weight.to_kind(p.kind()),
                Some(&self.bias.to_kind(p.kind())),
            ),
        }
    }
}

/// A served product's rows are padded to a multiple of this (fewer: to a power of two, 16 at
/// least). libtorch's bf16 products run on oneDNN, which compiles a kernel for each new row
/// count (1.3–1.8 ms for a layer's product here) and caches it: posts batched by length, and
/// early exit's shrinking batches, make a new count almost every pass. Padded, a handful of
/// counts recur, and a post or two at the demo's rate is not padded to 128 rows
/// (docs/model.md#early-exit).
pub const ROW_QUANTUM: i64 = 128;

/// The row count a served product pads `rows` to (see [`ROW_QUANTUM`]).
pub fn padded_row_count(rows: i64) -> i64 {
    if rows <= ROW_QUANTUM {
        (rows.max(1) as u64).next_power_of_two().max(16) as i64
    } else {
        (rows + ROW_QUANTUM - 1) / ROW_QUANTUM * ROW_QUANTUM
    }
}

/// `f` on `x` `[…, in]` with its rows (all dimensions but the last, flattened) padded with
/// zeros to [`padded_row_count`], and the padding's rows dropped from the result.
fn padded_rows(x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
    let shape = x.size();
    let inner = *shape
        .last()
        .expect("a product's input has a last dimension");
    let rows = x.numel() as i64 / inner.max(1);
    let padded = padded_row_count(rows);
    if padded == rows {
        return f(x);
    }
    let flat = x
        .reshape([rows, inner])
        .constant_pad_nd([0, 0, 0, padded - rows]);
    let out = f(&flat).narrow(0, 0, rows);
    let mut out_shape = shape;
    *out_shape.last_mut().expect("non-empty shape") = *out.size().last().expect("2-d");
    out.reshape(out_shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_measures_bf16_and_draws_nothing_from_the_generator() {
        let _rng = crate::torch_rng();
        let draw = || Vec::<f32>::try_from(Tensor::randn([4], (Kind::Float, tch::Device::Cpu)));
        tch::manual_seed(3);
        let first = draw().unwrap();
        tch::manual_seed(3);
        let speedup = bf16_speedup();
        assert_eq!(
            draw().unwrap(),
            first,
            "the measurement drew from the generator"
        );
        assert!(speedup.is_finite() && speedup > 0.0, "{speedup}");
        println!("bf16 products ran {speedup:.2}× as fast as f32 here");
        // bf16 only with the flag and a clear gain.
        assert!(!bf16_pays(false, 3.0));
        assert!(!bf16_pays(true, 1.14) && !bf16_pays(true, 0.0));
        assert!(bf16_pays(true, BF16_MARGIN) && bf16_pays(true, 1.7));
    }

    #[test]
    fn served_products_pad_rows_to_a_few_counts_and_give_the_same_values() {
        let _rng = crate::torch_rng();
        assert_eq!(
            [1, 16, 17, 33, 100, 128, 129, 256, 257].map(padded_row_count),
            [16, 16, 32, 64, 128, 128, 256, 256, 384]
        );
        let x = Tensor::randn([3, 7, 8], (Kind::Float, tch::Device::Cpu));
        let w = Tensor::randn([5, 8], (Kind::Float, tch::Device::Cpu));
        let direct = x.linear::<Tensor>(&w, None);
        let padded = padded_rows(&x, |x| x.linear::<Tensor>(&w, None));
        assert_eq!(padded.size(), [3, 7, 5]);
        assert!((padded - direct).abs().max().double_value(&[]) < 1e-5);
    }
}

#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(p: &Path, dim: i64, eps: f64) -> LayerNorm {
        let p = p.set_group(group(p, false));
        LayerNorm {
            weight: p.var("weight", &[dim], Init::Const(1.0)),
            bias: p.var("bias", &[dim], Init::Const(0.0)),
            eps,
        }
    }

    /// Always in f32, whatever the input's precision.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let dim = *self.weight.size().first().expect("1-d gain");
        xs.to_kind(Kind::Float).layer_norm(
            [dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

#[derive(Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(p: &Path, num: i64, dim: i64) -> Embedding {
        Embedding {
            weight: p.set_group(group(p, true)).var(
                "weight",
                &[num, dim],
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            ),
        }
    }

    pub fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.weight, ids, -1, false, false)
    }
}
