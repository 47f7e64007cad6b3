//! Packed passes: a scoring pass keeps its posts' real tokens only, one row each, so the matrix
//! products, LayerNorms, activations and residual adds never compute on padding.
//!
//! A padded pass of posts of 12 and 40 tokens computes 80 token rows for 52 real ones; padded
//! passes split a live micro-batch of mixed lengths into passes of similar length to limit
//! that, and each small pass then pays its own fixed costs. Packed, the residual stream is `[tokens,
//! hidden]`, every token of every post one row, posts one after another; only attention,
//! which must keep each post's tokens to themselves, sees the posts padded (`[posts, longest,
//! …]`, a bool mask on the padding), and its output goes back to the packed rows. The same
//! arithmetic on the same real tokens: only the padding's rows are gone, and a pass takes up
//! to its batch size of posts of any lengths ([`crate::train::sized_passes`]).
//!
//! Reads nothing and writes nothing: index bookkeeping for [`crate::encoder::Pass`], the
//! scoring passes of serving ([`crate::exit`]), of validation in training and of the exits'
//! fitting. Training's own steps (dropout, gradients) keep the padded layout, and so does
//! MPNet, whose relative position bias is an additive `[seq, seq]` mask per layer.

use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Device, Tensor};

static PACKED: AtomicBool = AtomicBool::new(true);

/// Whether scoring passes pack their tokens (the default), or compute on padded posts as
/// before (`flagship-bench model predict --padded`, to measure the difference): serving,
/// validation in training, the exits' fitting and a teacher's soft labels alike.
pub fn set_packed(on: bool) {
    PACKED.store(on, Ordering::Relaxed);
}

/// Whether scoring passes pack their tokens ([`set_packed`]).
pub fn packed() -> bool {
    PACKED.load(Ordering::Relaxed)
}

/// Where each post's tokens lie in a packed pass and in its padded view.
#[derive(Debug)]
pub struct Packing {
    /// Each post's real tokens.
    lens: Vec<i64>,
    /// Posts.
    pub batch: i64,
    /// The longest post: the padded view's length.
    pub seq: i64,
    /// Each packed row's position in the padded view (`[tokens]` int64, row-major
    /// `post * seq + token`); `None` when no post is padded (the two layouts agree).
    positions: Option<Tensor>,
    /// `[posts, 1, 1, seq]` bool, true on real tokens: attention's mask; `None` when no post is
    /// padded (libtorch's fastest kernel).
    pub attention: Option<Tensor>,
    /// `[posts, seq]` int64, 1 on real tokens (what [`crate::sequence::mean_pool`] and the
    /// heads read); `None` when no post is padded.
    pub mask: Option<Tensor>,
}

impl Packing {
    /// The packing of posts of `lens` real tokens (each at least one) on `device`.
    pub fn new(lens: &[usize], device: Device) -> Packing {
        let lens: Vec<i64> = lens.iter().map(|&l| l.max(1) as i64).collect();
        let batch = lens.len() as i64;
        let seq = lens.iter().copied().max().unwrap_or(1);
        let padded = lens.iter().any(|&l| l != seq);
        let (positions, attention, mask) = if padded {
            let total: i64 = lens.iter().sum();
            let mut at = Vec::with_capacity(total as usize);
            let mut real = vec![0i64; (batch * seq) as usize];
            for (p, &l) in lens.iter().enumerate() {
                let start = p as i64 * seq;
                at.extend(start..start + l);
                real[start as usize..(start + l) as usize].fill(1);
            }
            let mask = Tensor::from_slice(&real)
                .view([batch, seq])
                .to_device(device);
            (
                Some(Tensor::from_slice(&at).to_device(device)),
                Some(mask.gt(0).unsqueeze(1).unsqueeze(1)),
                Some(mask),
            )
        } else {
            (None, None, None)
        };
        Packing {
            lens,
            batch,
            seq,
            positions,
            attention,
            mask,
        }
    }

    /// Real tokens in all: the packed rows.
    pub fn tokens(&self) -> i64 {
        self.lens.iter().sum()
    }

    /// `x` `[posts, seq, C]` (padded) → `[tokens, C]`, the real tokens' rows in order.
    pub fn pack(&self, x: &Tensor) -> Tensor {
        let c = *x.size().last().expect("a last dimension");
        let flat = x.reshape([self.batch * self.seq, c]);
        match &self.positions {
            Some(at) => flat.index_select(0, at),
            None => flat,
        }
    }

    /// `x` `[tokens, C]` (packed) → `[posts, seq, C]`, zeros on the padding.
    pub fn pad(&self, x: &Tensor) -> Tensor {
        let c = *x.size().last().expect("a last dimension");
        match &self.positions {
            Some(at) => {
                let mut out = Tensor::zeros([self.batch * self.seq, c], (x.kind(), x.device()));
                let _ = out.index_copy_(0, at, x);
                out.view([self.batch, self.seq, c])
            }
            None => x.reshape([self.batch, self.seq, c]),
        }
    }

    /// The packing of the posts `stay` (indices into this one's, in order) and the packed
    /// rows they keep (`[tokens]` int64 indices into this packing's rows, for `index_select`).
    pub fn keep(&self, stay: &[usize], device: Device) -> (Packing, Tensor) {
        let mut starts = Vec::with_capacity(self.lens.len());
        let mut at = 0i64;
        for &l in &self.lens {
            starts.push(at);
            at += l;
        }
        let mut rows = Vec::new();
        for &p in stay {
            rows.extend(starts[p]..starts[p] + self.lens[p]);
        }
        let lens: Vec<usize> = stay.iter().map(|&p| self.lens[p] as usize).collect();
        (
            Packing::new(&lens, device),
            Tensor::from_slice(&rows).to_device(device),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn pack_and_pad_invert_each_other_and_keep_only_real_rows() {
        let _rng = crate::torch_rng();
        let p = Packing::new(&[2, 3, 1], Device::Cpu);
        assert_eq!((p.batch, p.seq, p.tokens()), (3, 3, 6));
        // Padded [3, 3, 1]: post p's token t holds 10p + t + 1 on real tokens, -1 on padding.
        let padded =
            Tensor::from_slice(&[1f32, 2., -1., 11., 12., 13., 21., -1., -1.]).view([3, 3, 1]);
        let packed = p.pack(&padded);
        assert_eq!(
            Vec::<f32>::try_from(packed.reshape([-1])).unwrap(),
            [1., 2., 11., 12., 13., 21.]
        );
        let back = p.pad(&packed);
        assert_eq!(
            Vec::<f32>::try_from(back.reshape([-1])).unwrap(),
            [1., 2., 0., 11., 12., 13., 21., 0., 0.]
        );
        assert_eq!(
            Vec::<i64>::try_from(p.mask.as_ref().unwrap().reshape([-1])).unwrap(),
            [1, 1, 0, 1, 1, 1, 1, 0, 0]
        );
        // The second and third posts stay: their rows, and a packing of lengths 3 and 1.
        let (q, rows) = p.keep(&[1, 2], Device::Cpu);
        assert_eq!(Vec::<i64>::try_from(&rows).unwrap(), [2, 3, 4, 5]);
        assert_eq!((q.batch, q.seq, q.tokens()), (2, 3, 4));
        // Equal lengths: no index, no mask, a view.
        let e = Packing::new(&[2, 2], Device::Cpu);
        assert!(e.positions.is_none() && e.attention.is_none() && e.mask.is_none());
        let x = Tensor::arange(8, (Kind::Float, Device::Cpu)).view([2, 2, 2]);
        assert_eq!(e.pad(&e.pack(&x)).size(), [2, 2, 2]);
    }
}
