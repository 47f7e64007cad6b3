//! The transformer encoder of BERT (MiniLM), RoBERTa and DistilBERT.
//!
//! Each part is a small struct with `new(path, &config)` and `forward`; the variable paths
//! are the checkpoint's tensor names (`embeddings.word_embeddings.weight`,
//! `encoder.layer.3.attention.self.query.bias`, DistilBERT's `transformer.layer.3.attention.q_lin.bias`),
//! so loading weights is a name match.

use tch::nn::Path;
use tch::{Kind, Tensor};

use crate::config::{Activation, Config, Family};
use crate::layers::{Embedding, LayerNorm, Linear, Precision};

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
}

#[derive(Debug)]
pub struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Option<Embedding>,
    layer_norm: LayerNorm,
    dropout: f64,
    family: Family,
    pad: i64,
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
            family: c.family,
            pad: c.pad_token_id,
        }
    }

    /// `ids`: `[batch, seq]` int64. Every token has type 0 (single sentences).
    pub fn forward(&self, ids: &Tensor, mode: Mode) -> Tensor {
        self.forward_words(&self.lookup(ids), ids, mode)
    }

    /// The word embeddings of `ids` alone (`[batch, seq, hidden]`).
    pub fn lookup(&self, ids: &Tensor) -> Tensor {
        self.word.forward(ids)
    }

    /// [`Embeddings::forward`] from given word embeddings (gradients with respect to them
    /// explain a prediction).
    pub fn forward_words(&self, words: &Tensor, ids: &Tensor, mode: Mode) -> Tensor {
        let seq = ids.size()[1];
        let positions = match self.family {
            // RoBERTa counts positions of real tokens from pad + 1; padding keeps `pad`.
            Family::Roberta => {
                let real = ids.ne(self.pad).to_kind(Kind::Int64);
                real.cumsum(1, Kind::Int64) * &real + self.pad
            }
            _ => Tensor::arange(seq, (Kind::Int64, ids.device())).unsqueeze(0),
        };
        let mut xs = words + self.position.forward(&positions);
        if let Some(tt) = &self.token_type {
            xs += tt.weight.get(0);
        }
        self.layer_norm
            .forward(&xs)
            .dropout(self.dropout, mode.train)
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
    heads: i64,
    activation: Activation,
    dropout: f64,
    attention_dropout: f64,
}

impl Layer {
    pub fn new(p: &Path, c: &Config) -> Layer {
        let n = match c.family {
            Family::Distilbert => &DISTILBERT_NAMES,
            _ => &BERT_NAMES,
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
            heads: c.num_attention_heads,
            activation: c.activation,
            dropout: c.hidden_dropout_prob,
            attention_dropout: c.attention_probs_dropout_prob,
        }
    }

    /// `xs`: `[batch, seq, hidden]` f32; `keep`: `[batch, 1, 1, seq]` bool, true on real tokens
    /// (`None`: no padding in the batch, which lets libtorch take its fastest attention kernel).
    pub fn forward(&self, xs: &Tensor, keep: Option<&Tensor>, mode: Mode) -> Tensor {
        let (b, s, h) = xs.size3().expect("[batch, seq, hidden]");
        let split = |t: Tensor| t.view([b, s, self.heads, h / self.heads]).transpose(1, 2);
        let q = split(self.query.forward(xs, mode.precision));
        let k = split(self.key.forward(xs, mode.precision));
        let v = split(self.value.forward(xs, mode.precision));
        let context = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            keep,
            if mode.train {
                self.attention_dropout
            } else {
                0.0
            },
            false,
            None,
            false,
        )
        .transpose(1, 2)
        .contiguous()
        .view([b, s, h]);
        let attended = self
            .attention_out
            .forward(&context, mode.precision)
            .dropout(self.dropout, mode.train);
        let xs = self
            .attention_norm
            .forward(&(attended.to_kind(Kind::Float) + xs));
        let inner = self.ffn_in.forward(&xs, mode.precision);
        let inner = match self.activation {
            Activation::Gelu => inner.gelu("none"),
            Activation::GeluTanh => inner.gelu("tanh"),
            Activation::Relu => inner.relu(),
        };
        let out = self
            .ffn_out
            .forward(&inner, mode.precision)
            .dropout(self.dropout, mode.train);
        self.output_norm.forward(&(out.to_kind(Kind::Float) + xs))
    }
}

/// Embeddings and the layer stack; `forward` gives the last hidden state.
#[derive(Debug)]
pub struct Encoder {
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
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
        let keep = mask.map(|m| m.gt(0).unsqueeze(1).unsqueeze(1));
        let mut xs = self.embeddings.forward_words(words, ids, mode);
        for layer in &self.layers {
            xs = layer.forward(&xs, keep.as_ref(), mode);
        }
        xs
    }
}
