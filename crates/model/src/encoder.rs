//! The transformer encoder of BERT (MiniLM), RoBERTa, DistilBERT and MPNet.
//!
//! Each part is a small struct with `new(path, &config)` and `forward`; the variable paths
//! are the checkpoint's tensor names (`embeddings.word_embeddings.weight`,
//! `encoder.layer.3.attention.self.query.bias`, DistilBERT's `transformer.layer.3.attention.q_lin.bias`,
//! MPNet's `encoder.layer.3.attention.attn.q.bias` and `encoder.relative_attention_bias.weight`),
//! so loading weights is a name match.

use tch::nn::Path;
use tch::{Device, Kind, Tensor};

use crate::config::{Activation, Config, Family, RELATIVE_BUCKETS, RELATIVE_MAX_DISTANCE};
use crate::dropout::dropout;
use crate::layers::{Embedding, LayerNorm, Linear, Precision};
use crate::packing::Packing;

/// Whether dropout is active, and the precision of the matrix products.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    pub train: bool,
    pub precision: Precision,
}

impl Mode {
    pub const EVAL: Mode = Mode {
        train: false,
        precision: Precision::F32,
    };

    /// Scoring (no dropout) with products in `precision`.
    pub fn serve(precision: Precision) -> Mode {
        Mode {
            train: false,
            precision,
        }
    }
}

#[derive(Debug)]
pub struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Option<Embedding>,
    layer_norm: LayerNorm,
    dropout: f64,
    /// RoBERTa and MPNet: positions count real tokens from this id + 1 (see
    /// [`Config::position_pad`]); `None`: 0, 1, 2….
    position_pad: Option<i64>,
}

impl Embeddings {
    pub fn new(p: &Path, c: &Config) -> Embeddings {
        let h = c.hidden_size;
        Embeddings {
            word: Embedding::new(&(p / "word_embeddings"), c.vocab_size, h),
            position: Embedding::new(&(p / "position_embeddings"), c.max_position_embeddings, h),
            token_type: (c.type_vocab_size > 0)
                .then(|| Embedding::new(&(p / "token_type_embeddings"), c.type_vocab_size, h)),
            layer_norm: LayerNorm::new(&(p / "LayerNorm"), h, c.layer_norm_eps),
            dropout: c.hidden_dropout_prob,
            position_pad: c.position_pad(),
        }
    }

    /// `ids`: `[batch, seq]` int64. Every token has type 0 (single sentences).
    pub fn forward(&self, ids: &Tensor, mode: Mode) -> Tensor {
        self.forward_words(&self.lookup(ids), ids, mode)
    }

    /// The word embedding matrix `[vocab, hidden]`.
    pub fn word_weight(&self) -> &Tensor {
        &self.word.weight
    }

    /// The word embeddings of `ids` alone (`[batch, seq, hidden]`).
    pub fn lookup(&self, ids: &Tensor) -> Tensor {
        self.word.forward(ids)
    }

    /// [`Embeddings::forward`] from given word embeddings (gradients with respect to them
    /// explain a prediction).
    pub fn forward_words(&self, words: &Tensor, ids: &Tensor, mode: Mode) -> Tensor {
        let seq = ids.size()[1];
        let positions = match self.position_pad {
            // RoBERTa and MPNet count positions of real tokens from pad + 1; padding keeps `pad`.
            Some(pad) => {
                let real = ids.ne(pad).to_kind(Kind::Int64);
                real.cumsum(1, Kind::Int64) * &real + pad
            }
            None => Tensor::arange(seq, (Kind::Int64, ids.device())).unsqueeze(0),
        };
        let mut xs = words + self.position.forward(&positions);
        if let Some(tt) = &self.token_type {
            xs += tt.weight.get(0);
        }
        dropout(&self.layer_norm.forward(&xs), self.dropout, mode.train)
    }
}

/// Tensor names inside one layer, per family.
struct LayerNames {
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attention_out: &'static str,
    attention_norm: &'static str,
    ffn_in: &'static str,
    ffn_out: &'static str,
    output_norm: &'static str,
}

const BERT_NAMES: LayerNames = LayerNames {
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    output_norm: "output.LayerNorm",
};

const DISTILBERT_NAMES: LayerNames = LayerNames {
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attention_out: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    ffn_in: "ffn.lin1",
    ffn_out: "ffn.lin2",
    output_norm: "output_layer_norm",
};

const MPNET_NAMES: LayerNames = LayerNames {
    query: "attention.attn.q",
    key: "attention.attn.k",
    value: "attention.attn.v",
    attention_out: "attention.attn.o",
    attention_norm: "attention.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    output_norm: "output.LayerNorm",
};

/// One post-LayerNorm transformer layer (self-attention, then feed-forward).
#[derive(Debug)]
pub struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    output_norm: LayerNorm,
    /// Query, key and value as one product ([`Linear::stacked`]), made the first time a
    /// frozen (served) layer runs; a layer in training keeps the three.
    qkv: std::sync::OnceLock<Linear>,
    heads: i64,
    activation: Activation,
    dropout: f64,
    attention_dropout: f64,
}

impl Layer {
    pub fn new(p: &Path, c: &Config) -> Layer {
        let n = match c.family {
            Family::Distilbert => &DISTILBERT_NAMES,
            Family::Mpnet => &MPNET_NAMES,
            Family::Bert | Family::Roberta => &BERT_NAMES,
        };
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let at = |name: &str| name.split('.').fold(p.clone(), |p: Path, part| p.sub(part));
        Layer {
            query: Linear::new(&at(n.query), h, h),
            key: Linear::new(&at(n.key), h, h),
            value: Linear::new(&at(n.value), h, h),
            attention_out: Linear::new(&at(n.attention_out), h, h),
            attention_norm: LayerNorm::new(&at(n.attention_norm), h, c.layer_norm_eps),
            ffn_in: Linear::new(&at(n.ffn_in), h, i),
            ffn_out: Linear::new(&at(n.ffn_out), i, h),
            output_norm: LayerNorm::new(&at(n.output_norm), h, c.layer_norm_eps),
            qkv: std::sync::OnceLock::new(),
            heads: c.num_attention_heads,
            activation: c.activation,
            dropout: c.hidden_dropout_prob,
            attention_dropout: c.attention_probs_dropout_prob,
        }
    }

    /// `xs`: `[batch, seq, hidden]` f32; `mask`: `[batch, 1, 1, seq]` bool, true on real tokens
    /// (`None`: no padding in the batch, which lets libtorch take its fastest attention kernel),
    /// or an additive float mask broadcastable to `[batch, heads, seq, seq]` in the matrix
    /// products' precision (MPNet's relative position bias, padding at [`MASKED`]), added to
    /// the scaled scores before the softmax.
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Tensor {
        let (b, s, h) = xs.size3().expect("[batch, seq, hidden]");
        let split = |t: &Tensor| t.view([b, s, self.heads, h / self.heads]).transpose(1, 2);
        let (q, k, v) = if self.query.weight.requires_grad() {
            (
                split(&self.query.forward(xs, mode.precision)),
                split(&self.key.forward(xs, mode.precision)),
                split(&self.value.forward(xs, mode.precision)),
            )
        } else {
            let qkv = self
                .qkv
                .get_or_init(|| Linear::stacked(&[&self.query, &self.key, &self.value]))
                .forward(xs, mode.precision);
            let parts = qkv.split(h, -1);
            (split(&parts[0]), split(&parts[1]), split(&parts[2]))
        };
        let context = if mode.train && self.attention_dropout > 0.0 {
            crate::dropout::attention(&q, &k, &v, mask, self.attention_dropout)
        } else {
            Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, false, None, false)
        }
        .transpose(1, 2)
        .contiguous()
        .view([b, s, h]);
        self.after_attention(&context, xs, mode)
    }

    /// [`Layer::forward`] on a scoring pass's packed tokens ([`Packing`]): `xs` `[tokens,
    /// hidden]` f32, each post's real tokens one after another. The products, norms and
    /// activation run on those rows only; attention reads them padded per post, masked by
    /// `pack.attention` (none when no post is padded), and its output is packed again. No
    /// dropout: a served layer's pass (query, key and value as one product), or a layer in
    /// training scoring its validation (the three products, as [`Layer::forward`] makes them).
    pub fn forward_packed(&self, xs: &Tensor, pack: &Packing, mode: Mode) -> Tensor {
        debug_assert!(!mode.train);
        let h = xs.size()[1];
        let (b, s) = (pack.batch, pack.seq);
        let split = |t: &Tensor| t.view([b, s, self.heads, h / self.heads]).transpose(1, 2);
        let (q, k, v) = if self.query.weight.requires_grad() {
            let part = |l: &Linear| split(&pack.pad(&l.forward(xs, mode.precision)));
            (part(&self.query), part(&self.key), part(&self.value))
        } else {
            let qkv = pack.pad(
                &self
                    .qkv
                    .get_or_init(|| Linear::stacked(&[&self.query, &self.key, &self.value]))
                    .forward(xs, mode.precision),
            );
            let parts = qkv.split(h, -1);
            (split(&parts[0]), split(&parts[1]), split(&parts[2]))
        };
        let context = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            pack.attention.as_ref(),
            0.0,
            false,
            None,
            false,
        )
        .transpose(1, 2)
        .contiguous()
        .view([b, s, h]);
        self.after_attention(&pack.pack(&context), xs, mode)
    }

    /// Attention's output projection, the residual and its norm, then the feed-forward block
    /// (any leading shape: `[batch, seq, hidden]` or packed `[tokens, hidden]`).
    fn after_attention(&self, context: &Tensor, xs: &Tensor, mode: Mode) -> Tensor {
        let attended = dropout(
            &self.attention_out.forward(context, mode.precision),
            self.dropout,
            mode.train,
        );
        let xs = self
            .attention_norm
            .forward(&(attended.to_kind(Kind::Float) + xs));
        let inner = self.ffn_in.forward(&xs, mode.precision);
        let inner = match self.activation {
            Activation::Gelu => inner.gelu("none"),
            Activation::GeluTanh => inner.gelu("tanh"),
            Activation::Relu => inner.relu(),
        };
        let out = dropout(
            &self.ffn_out.forward(&inner, mode.precision),
            self.dropout,
            mode.train,
        );
        self.output_norm.forward(&(out.to_kind(Kind::Float) + xs))
    }
}

/// A scoring pass through the encoder, a layer at a time (no dropout): on the posts' real
/// tokens only where it is packed ([`Packing`]), else on the padded posts with the encoder's
/// attention mask. Serving ([`crate::exit`]), validation ([`crate::train::probabilities`]) and
/// the exits' fitting all run their layers through one, so their figures are one model's.
#[derive(Debug)]
pub struct Pass {
    /// `[tokens, hidden]` packed, or `[rows, seq, hidden]` padded (f32).
    xs: Tensor,
    pack: Option<Packing>,
    /// The padded layout's per-layer mask ([`Encoder::attention_mask`]).
    attention: Option<Tensor>,
    /// The padded layout's `[rows, seq]` mask (1 on real tokens).
    mask: Option<Tensor>,
}

impl Pass {
    /// The embeddings of `ids`/`mask` `[rows, seq]` as collated; `lens`: each row's real
    /// tokens; `packed`: the layers run on packed tokens, where the family packs
    /// ([`Encoder::packs`]; MPNet stays padded).
    pub fn new(
        enc: &Encoder,
        ids: &Tensor,
        mask: Option<Tensor>,
        lens: &[usize],
        packed: bool,
        mode: Mode,
    ) -> Pass {
        debug_assert!(!mode.train);
        let xs = enc.embeddings.forward(ids, mode);
        if packed && enc.packs() {
            let pack = Packing::new(lens, ids.device());
            Pass {
                xs: pack.pack(&xs),
                pack: Some(pack),
                attention: None,
                mask: None,
            }
        } else {
            Pass {
                attention: enc.attention_mask(ids, mask.as_ref(), mode),
                xs,
                pack: None,
                mask,
            }
        }
    }

    /// The rows through `layer`.
    pub fn through(&mut self, layer: &Layer, mode: Mode) {
        self.xs = match &self.pack {
            Some(p) => layer.forward_packed(&self.xs, p, mode),
            None => layer.forward(&self.xs, self.attention.as_ref(), mode),
        };
    }

    /// The rows through every layer of `enc`.
    pub fn through_all(mut self, enc: &Encoder, mode: Mode) -> Pass {
        for layer in &enc.layers {
            self.through(layer, mode);
        }
        self
    }

    /// The rows as posts × tokens, `[rows, seq, hidden]` f32 (packed: padded again, zeros on
    /// the padding), and their `[rows, seq]` mask (`None`: nothing padded): what the heads
    /// and [`crate::sequence::mean_pool`] read.
    pub fn view(&self) -> (Tensor, Option<Tensor>) {
        match &self.pack {
            Some(p) => (p.pad(&self.xs), p.mask.as_ref().map(Tensor::shallow_clone)),
            None => (
                self.xs.shallow_clone(),
                self.mask.as_ref().map(Tensor::shallow_clone),
            ),
        }
    }

    /// Keeps the rows `stay` (indices into the rows still in the pass, in order) and drops
    /// the others (the posts that left by an exit).
    pub fn keep(&mut self, stay: &[i64]) {
        let device = self.xs.device();
        match &mut self.pack {
            Some(p) => {
                let at: Vec<usize> = stay.iter().map(|&i| i as usize).collect();
                let (kept, rows) = p.keep(&at, device);
                self.xs = self.xs.index_select(0, &rows);
                *p = kept;
            }
            None => {
                let keep = Tensor::from_slice(stay).to_device(device);
                self.xs = self.xs.index_select(0, &keep);
                self.mask = self.mask.as_ref().map(|m| m.index_select(0, &keep));
                // MPNet's bias without padding is one `[1, heads, seq, seq]` for every row.
                self.attention = self.attention.as_ref().map(|a| {
                    if a.size()[0] == 1 {
                        a.shallow_clone()
                    } else {
                        a.index_select(0, &keep)
                    }
                });
            }
        }
    }
}

/// What padded keys get in an additive attention mask: far below any score, finite in f32 and
/// bf16 (so a row never turns to NaN), so their softmax weight is exactly 0 — as with
/// `transformers`' `finfo.min`.
pub const MASKED: f64 = -1e30;

/// MPNet's relative position bias (`encoder.relative_attention_bias`): one learnt value per
/// head and relative-position bucket, computed once per forward and added to the attention
/// scores of every layer.
#[derive(Debug)]
pub struct RelativeBias {
    embedding: Embedding,
    /// Buckets of `key − query` for every pair of positions `[max_positions, max_positions]`
    /// (int64), computed once on the CPU; a sequence of length `s` uses its top-left `s × s`.
    buckets: Tensor,
}

impl RelativeBias {
    pub fn new(p: &Path, c: &Config) -> RelativeBias {
        let n = c.max_position_embeddings;
        let positions = Tensor::arange(n, (Kind::Int64, Device::Cpu));
        // [query, key] = key − query, as MPNetEncoder.compute_position_bias.
        let relative = positions.unsqueeze(0) - positions.unsqueeze(1);
        RelativeBias {
            embedding: Embedding::new(p, c.relative_attention_num_buckets, c.num_attention_heads),
            buckets: relative_position_bucket(&relative, RELATIVE_BUCKETS, RELATIVE_MAX_DISTANCE)
                .to_device(p.device()),
        }
    }

    /// The bias `[1, heads, seq, seq]` (f32) for a sequence of `seq` tokens on `device`.
    pub fn forward(&self, seq: i64, device: Device) -> Tensor {
        let buckets = self
            .buckets
            .narrow(0, 0, seq)
            .narrow(1, 0, seq)
            .to_device(device);
        self.embedding
            .forward(&buckets)
            .permute([2, 0, 1])
            .unsqueeze(0)
    }
}

/// T5's bidirectional relative-position buckets, exactly as `transformers`'
/// `MPNetEncoder.relative_position_bucket` computes them (same tensor operations, f32
/// logarithm included, so the buckets agree to the last one): half the buckets for keys
/// before the query, half for keys after; within each half, distances below a quarter of the
/// buckets get one bucket each and longer ones logarithmically wider buckets, everything at
/// or beyond `max_distance` the last.
pub fn relative_position_bucket(relative: &Tensor, num_buckets: i64, max_distance: i64) -> Tensor {
    let n = -relative;
    let half = num_buckets / 2;
    let ret = n.lt(0).to_kind(Kind::Int64) * half;
    let n = n.abs();
    let max_exact = half / 2;
    let is_small = n.lt(max_exact);
    let large = ((n.to_kind(Kind::Float) / max_exact as f64).log()
        / (max_distance as f64 / max_exact as f64).ln()
        * (half - max_exact) as f64)
        .to_kind(Kind::Int64)
        + max_exact;
    let large = large.clamp_max(half - 1);
    ret + n.where_self(&is_small, &large)
}

/// Embeddings and the layer stack; `forward` gives the last hidden state.
#[derive(Debug)]
pub struct Encoder {
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
    /// MPNet's relative position bias, shared by every layer; `None` for the other families.
    pub relative: Option<RelativeBias>,
}

impl Encoder {
    /// `p` is the encoder's root (e.g. `bert` inside a classifier, or the root of a bare
    /// encoder checkpoint).
    pub fn new(p: &Path, c: &Config) -> Encoder {
        let stack = match c.family {
            Family::Distilbert => p / "transformer" / "layer",
            _ => p / "encoder" / "layer",
        };
        Encoder {
            embeddings: Embeddings::new(&(p / "embeddings"), c),
            layers: (0..c.num_hidden_layers)
                .map(|l| Layer::new(&(&stack / l), c))
                .collect(),
            relative: (c.family == Family::Mpnet)
                .then(|| RelativeBias::new(&(p / "encoder" / "relative_attention_bias"), c)),
        }
    }

    /// `ids`, `mask`: `[batch, seq]` int64 (mask 1 on real tokens; `None` when nothing is
    /// padded). Returns `[batch, seq, hidden]` f32.
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Tensor {
        self.forward_words(&self.embeddings.lookup(ids), ids, mask, mode)
    }

    /// [`Encoder::forward`] from given word embeddings (see [`Embeddings::forward_words`]).
    pub fn forward_words(
        &self,
        words: &Tensor,
        ids: &Tensor,
        mask: Option<&Tensor>,
        mode: Mode,
    ) -> Tensor {
        let mask = self.attention_mask(ids, mask, mode);
        let mut xs = self.embeddings.forward_words(words, ids, mode);
        for layer in &self.layers {
            xs = layer.forward(&xs, mask.as_ref(), mode);
        }
        xs
    }

    /// Whether a scoring pass may run on packed tokens ([`Layer::forward_packed`]): a family
    /// without MPNet's relative position bias (an additive `[seq, seq]` mask per layer).
    /// Training's own passes (dropout, gradients) keep the padded layout.
    pub fn packs(&self) -> bool {
        self.relative.is_none()
    }

    /// The mask every layer takes for `ids`/`mask` `[batch, seq]` (see [`Layer::forward`]):
    /// `[batch, 1, 1, seq]` bool, or MPNet's additive relative position bias with the padded
    /// keys at [`MASKED`] (`[batch or 1, heads, seq, seq]`); `None` when nothing is padded
    /// (and no bias).
    pub fn attention_mask(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        mode: Mode,
    ) -> Option<Tensor> {
        let keep = mask.map(|m| m.gt(0).unsqueeze(1).unsqueeze(1));
        // MPNet: the relative position bias, once for all layers, with the padded keys at
        // MASKED (an additive mask, so the attention takes a kernel that accepts one).
        let additive = self.relative.as_ref().map(|r| {
            let bias = r.forward(ids.size()[1], ids.device());
            let bias = match &keep {
                Some(k) => {
                    bias + k
                        .zeros_like()
                        .to_kind(Kind::Float)
                        .masked_fill(&k.logical_not(), MASKED)
                }
                None => bias,
            };
            bias.to_kind(mode.precision.kind())
        });
        additive.or(keep)
    }
}
