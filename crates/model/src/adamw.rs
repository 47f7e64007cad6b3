//! AdamW (decoupled weight decay, bias-corrected moments) with the gradients' global-norm
//! clipping folded in: on the CPU, one pass over each parameter's memory — what
//! `torch.optim.AdamW(fused=True)` does, the Hugging Face Trainer's default since torch 2.8.
//! tch exposes neither that kernel nor the `_foreach_` ops; its own AdamW
//! (`torch::optim::AdamW`) runs about ten tensor operations per parameter, each a pass over
//! the parameter, its gradient and its moments, and the clipping two passes more.
//!
//! The arithmetic is `torch::optim::AdamW`'s, in f32, step for step:
//!
//! ```text
//! g ← g · min(1, max_norm / (‖all g‖₂ + 1e-6))
//! p ← p · (1 − lr · wd)
//! m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
//! p ← p − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//!
//! Elsewhere (CUDA, or a tensor that is not contiguous f32 in host memory) the same
//! arithmetic runs as tensor operations, without reading the norm back to the host.
//! A parameter without a gradient is skipped and keeps its step count, as in torch.
//!
//! [`AdamW::gradients`] makes a step's gradients without accumulating them into `.grad()`
//! (`zero_grad(set_to_none=True)`'s effect: nothing to zero before the backward pass, nothing to
//! add into after it), and takes a word embedding's as the rows a batch read ([`RowLeaf`]): a
//! batch reads a few hundred of the MiniLM's 30,522 rows, and a dense gradient of that matrix
//! (47 MB) was allocated, zeroed, filled and read twice every step. Rows no batch read get a
//! zero gradient, exactly as the dense one gave them: the moments decay and the weight decays.

use tch::{Device, Kind, Tensor};

use crate::threads::for_chunks;

/// AdamW's constants (PyTorch's defaults but the weight decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyper {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for Hyper {
    fn default() -> Hyper {
        Hyper {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// One trainable parameter and its state.
struct Param {
    var: Tensor,
    group: usize,
    m: Tensor,
    v: Tensor,
    /// Steps this parameter took (those where it had a gradient).
    steps: i32,
}

/// The optimizer over a var store's trainable variables, each in its group.
pub struct AdamW {
    hyper: Hyper,
    params: Vec<Param>,
    /// Threads the one-pass update uses (libtorch's intra-op threads).
    threads: usize,
    /// The one-pass update may run (CPU; off: the tensor operations, for comparison).
    pub fused: bool,
}

impl AdamW {
    pub fn new(vs: &tch::nn::VarStore, hyper: Hyper) -> AdamW {
        let vars = vs.variables_.lock().expect("var store lock");
        let params = vars
            .trainable_variables
            .iter()
            .map(|v| Param {
                var: v.tensor.shallow_clone(),
                group: v.group,
                m: v.tensor.zeros_like().detach(),
                v: v.tensor.zeros_like().detach(),
                steps: 0,
            })
            .collect();
        AdamW {
            hyper,
            params,
            threads: tch::get_num_threads().max(1) as usize,
            fused: true,
        }
    }

    /// Each parameter's moments, named `adamw.{i}.m` and `adamw.{i}.v` by its place in the
    /// var store's order, and its step count: what a checkpoint keeps of the optimizer
    /// ([`AdamW::restore`] takes them back).
    pub fn state(&self) -> (Vec<(String, Tensor)>, Vec<i32>) {
        let mut named = Vec::with_capacity(2 * self.params.len());
        for (i, p) in self.params.iter().enumerate() {
            named.push((format!("adamw.{i}.m"), p.m.shallow_clone()));
            named.push((format!("adamw.{i}.v"), p.v.shallow_clone()));
        }
        (named, self.params.iter().map(|p| p.steps).collect())
    }

    /// Takes back what [`AdamW::state`] gave, from `tensors` (by name) and `steps`.
    pub fn restore(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
        steps: &[i32],
    ) -> Result<(), String> {
        if steps.len() != self.params.len() {
            return Err(format!(
                "{} step counts for {} parameters",
                steps.len(),
                self.params.len()
            ));
        }
        let _no_grad = tch::no_grad_guard();
        for (i, (p, &s)) in self.params.iter_mut().zip(steps).enumerate() {
            for (name, t) in [
                (format!("adamw.{i}.m"), &mut p.m),
                (format!("adamw.{i}.v"), &mut p.v),
            ] {
                let saved = tensors
                    .get(&name)
                    .ok_or_else(|| format!("`{name}` is missing"))?;
                if saved.size() != t.size() {
                    return Err(format!(
                        "`{name}` has shape {:?}, want {:?}",
                        saved.size(),
                        t.size()
                    ));
                }
                t.copy_(saved);
            }
            p.steps = s;
        }
        Ok(())
    }

    /// The gradients of `loss` for every parameter, in the optimizer's order (`None`: not
    /// reached, or frozen), made without accumulating into `.grad()`. `rows`' parameter gets
    /// its gradient as the rows its leaf holds; `rows` must be one of this optimizer's
    /// parameters (else that parameter would silently never step).
    pub fn gradients(&self, loss: &Tensor, rows: Option<&RowLeaf>) -> Vec<Option<Grad>> {
        let sparse = rows.map(|r| {
            let at = self
                .params
                .iter()
                .position(|p| same_tensor(&p.var, &r.param))
                .expect("the row leaf's parameter is one of the optimizer's");
            (at, r)
        });
        // What the backward pass differentiates: every trainable parameter (the row leaf in
        // its parameter's place); a frozen one has no gradient to make.
        let wanted: Vec<(usize, &Tensor)> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| match sparse {
                Some((at, r)) if at == i => (i, &r.leaf),
                _ => (i, &p.var),
            })
            .filter(|(_, t)| t.requires_grad())
            .collect();
        let inputs: Vec<&Tensor> = wanted.iter().map(|(_, t)| *t).collect();
        let mut out: Vec<Option<Grad>> = self.params.iter().map(|_| None).collect();
        for ((i, _), g) in wanted
            .iter()
            .zip(Tensor::run_backward(&[loss], &inputs, false, false))
        {
            if g.defined() {
                out[*i] = Some(match sparse {
                    Some((at, r)) if at == *i => Grad::Rows {
                        index: r.index.shallow_clone(),
                        values: g,
                    },
                    _ => Grad::Dense(g),
                });
            }
        }
        out
    }

    /// Gradients to zero, in place.
    pub fn zero_grad(&mut self) {
        for p in &self.params {
            let mut g = p.var.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// [`AdamW::step_with`] the gradients accumulated in `.grad()` by `backward()`.
    pub fn step(
        &mut self,
        max_norm: f64,
        lr: &dyn Fn(usize) -> f64,
        weight_decay: &dyn Fn(usize) -> f64,
    ) {
        let grads = self
            .params
            .iter()
            .map(|p| {
                let g = p.var.grad();
                g.defined().then_some(Grad::Dense(g))
            })
            .collect();
        self.step_with(grads, max_norm, lr, weight_decay);
    }

    /// Clips the gradients' global L2 norm to `max_norm`, then one step: `lr(group)` and
    /// `weight_decay(group)` for each parameter's group. `grads` are in the optimizer's order
    /// (as [`AdamW::gradients`] gives them).
    pub fn step_with(
        &mut self,
        grads: Vec<Option<Grad>>,
        max_norm: f64,
        lr: &dyn Fn(usize) -> f64,
        weight_decay: &dyn Fn(usize) -> f64,
    ) {
        assert_eq!(
            grads.len(),
            self.params.len(),
            "one gradient slot a parameter"
        );
        let h = self.hyper;
        let live: Vec<(usize, Grad)> = grads
            .into_iter()
            .enumerate()
            .filter_map(|(i, g)| g.map(|g| (i, g)))
            .collect();
        if live.is_empty() {
            return;
        }
        let host = self.fused
            && live.iter().all(|(i, g)| {
                let p = &self.params[*i];
                [&p.var, &p.m, &p.v].iter().all(|t| on_host_f32(t))
                    && match g {
                        Grad::Dense(g) => on_host_f32(g),
                        Grad::Rows { index, values } => {
                            on_host_f32(values) && index.device() == Device::Cpu && p.var.dim() == 2
                        }
                    }
            });
        tch::no_grad(|| {
            if host {
                // Each row-sparse gradient's map: parameter row → its row in `values`, or -1
                // (empty for a dense gradient). The views point into them.
                let maps: Vec<Vec<i32>> = live
                    .iter()
                    .map(|(i, g)| match g {
                        Grad::Dense(_) => Vec::new(),
                        Grad::Rows { index, .. } => row_map(index, self.params[*i].var.size()[0]),
                    })
                    .collect();
                let views: Vec<Views> = live
                    .iter()
                    .zip(&maps)
                    .map(|((i, g), map)| {
                        let p = &self.params[*i];
                        match g {
                            Grad::Dense(g) => Views::of(&p.var, g, &p.m, &p.v),
                            Grad::Rows { values, .. } => {
                                Views::rows(&p.var, values, map, &p.m, &p.v)
                            }
                        }
                    })
                    .collect();
                let norm = global_norm(&views, self.threads);
                let clip = (max_norm / (norm + 1e-6)).min(1.0) as f32;
                let coefs: Vec<Coef> = live
                    .iter()
                    .map(|(i, _)| {
                        let p = &mut self.params[*i];
                        p.steps += 1;
                        Coef::new(h, p.steps, lr(p.group), weight_decay(p.group), clip)
                    })
                    .collect();
                update(&views, &coefs, self.threads);
            } else {
                let dense: Vec<Tensor> = live
                    .iter()
                    .map(|(i, g)| g.dense(&self.params[*i].var))
                    .collect();
                let refs: Vec<&Tensor> = dense.iter().collect();
                let clip = clip_coefficient(&refs, max_norm);
                for ((i, _), g) in live.iter().zip(&dense) {
                    let p = &mut self.params[*i];
                    p.steps += 1;
                    tensor_step(p, &(g * &clip), h, lr(p.group), weight_decay(p.group));
                }
            }
        });
    }
}

/// One parameter's gradient for a step.
pub enum Grad {
    /// As large as the parameter.
    Dense(Tensor),
    /// `values` `[n, dim]` for the distinct rows `index` (int64 `[n]`) of a `[rows, dim]`
    /// parameter; every other row's gradient is zero.
    Rows { index: Tensor, values: Tensor },
}

impl Grad {
    /// The gradient as large as `param`.
    fn dense(&self, param: &Tensor) -> Tensor {
        match self {
            Grad::Dense(g) => g.shallow_clone(),
            Grad::Rows { index, values } => param.zeros_like().index_add(0, index, values),
        }
    }
}

/// A matrix parameter read through a leaf holding only the rows a batch reads: the forward
/// pass reads `leaf` (`param`'s rows `index`, detached), so the backward pass makes a gradient
/// of those rows alone ([`AdamW::gradients`]).
pub struct RowLeaf {
    pub param: Tensor,
    pub index: Tensor,
    pub leaf: Tensor,
}

impl RowLeaf {
    /// The rows of `param` that `ids` (any shape, int64) read, as a leaf, and `ids` renumbered
    /// onto the leaf's rows (same shape): `embedding(leaf, renumbered)` is
    /// `embedding(param, ids)`.
    pub fn gather(param: &Tensor, ids: &Tensor) -> (RowLeaf, Tensor) {
        let (index, renumbered) = ids.internal_unique(true, true);
        let leaf = param
            .index_select(0, &index)
            .detach()
            .set_requires_grad(true);
        (
            RowLeaf {
                param: param.shallow_clone(),
                index,
                leaf,
            },
            renumbered.view_as(ids),
        )
    }
}

/// The same tensor (storage, offset and shape), not merely equal values.
fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    a.data_ptr() == b.data_ptr() && a.size() == b.size()
}

/// For each of `rows` rows: its position in `index` (distinct int64 row numbers), or -1.
fn row_map(index: &Tensor, rows: i64) -> Vec<i32> {
    assert_eq!(index.dim(), 1, "a row index is 1-d");
    let index = Vec::<i64>::try_from(index).expect("an int64 row index");
    let mut map = vec![-1i32; rows as usize];
    for (at, &r) in index.iter().enumerate() {
        assert!((0..rows).contains(&r), "row {r} of {rows}");
        assert_eq!(map[r as usize], -1, "row {r} twice in a row index");
        map[r as usize] = at as i32;
    }
    map
}

fn on_host_f32(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous()
}

/// `min(1, max / (‖grads‖ + 1e-6))` as a tensor on the gradients' device (no read-back).
fn clip_coefficient(grads: &[&Tensor], max: f64) -> Tensor {
    let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
    (Tensor::stack(&norms, 0).norm() + 1e-6)
        .reciprocal()
        .multiply_scalar(max)
        .clamp_max(1.0)
}

/// The step as tensor operations (`torch::optim::AdamW`'s).
fn tensor_step(p: &mut Param, g: &Tensor, h: Hyper, lr: f64, wd: f64) {
    let t = p.steps;
    let (bc1, bc2) = (1.0 - h.beta1.powi(t), 1.0 - h.beta2.powi(t));
    let mut var = p.var.shallow_clone();
    let _ = var.g_mul_scalar_(1.0 - lr * wd);
    let _ = p.m.g_mul_scalar_(h.beta1).g_add_(&(g * (1.0 - h.beta1)));
    let _ =
        p.v.g_mul_scalar_(h.beta2)
            .g_add_(&(g * g * (1.0 - h.beta2)));
    let denom = (p.v.sqrt() / bc2.sqrt()) + h.eps;
    let _ = var.g_sub_(&(&p.m / denom * (lr / bc1)));
}

/// One parameter's step constants.
#[derive(Clone, Copy)]
struct Coef {
    /// `1 − lr · wd`.
    decay: f32,
    b1: f32,
    b2: f32,
    /// `1 − β₁`, `1 − β₂`: taken in f64 then rounded, as torch passes its scalars.
    one_minus_b1: f32,
    one_minus_b2: f32,
    /// `lr / (1 − β₁ᵗ)`.
    step_size: f32,
    /// `√(1 − β₂ᵗ)`.
    bc2_sqrt: f32,
    eps: f32,
    clip: f32,
}

impl Coef {
    fn new(h: Hyper, t: i32, lr: f64, wd: f64, clip: f32) -> Coef {
        Coef {
            decay: (1.0 - lr * wd) as f32,
            b1: h.beta1 as f32,
            b2: h.beta2 as f32,
            one_minus_b1: (1.0 - h.beta1) as f32,
            one_minus_b2: (1.0 - h.beta2) as f32,
            step_size: (lr / (1.0 - h.beta1.powi(t))) as f32,
            bc2_sqrt: (1.0 - h.beta2.powi(t)).sqrt() as f32,
            eps: h.eps as f32,
            clip,
        }
    }
}

/// Raw views of one parameter's memory: its value and moments (`len` f32 each) and its
/// gradient (`g_len` f32: `len`, or a row-sparse gradient's rows, `rows` mapping each of the
/// parameter's rows of `dim` to one of them or -1). Valid while the tensors (and the map) live
/// and nothing else touches them (the step holds them).
#[derive(Clone, Copy)]
struct Views {
    p: *mut f32,
    g: *const f32,
    m: *mut f32,
    v: *mut f32,
    len: usize,
    g_len: usize,
    /// Null for a dense gradient.
    rows: *const i32,
    dim: usize,
}

// The views are split into disjoint chunks, one thread each.
unsafe impl Send for Views {}
unsafe impl Sync for Views {}

impl Views {
    fn of(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> Views {
        let len = p.numel();
        assert!([g, m, v].iter().all(|t| t.numel() == len), "shapes agree");
        Views {
            p: p.data_ptr() as *mut f32,
            g: g.data_ptr() as *const f32,
            m: m.data_ptr() as *mut f32,
            v: v.data_ptr() as *mut f32,
            len,
            g_len: len,
            rows: std::ptr::null(),
            dim: 0,
        }
    }

    /// A `[rows, dim]` parameter whose gradient is `values` `[n, dim]` on the rows `map` says.
    fn rows(p: &Tensor, values: &Tensor, map: &[i32], m: &Tensor, v: &Tensor) -> Views {
        let (len, dim) = (p.numel(), p.size()[1] as usize);
        assert!(
            [m, v].iter().all(|t| t.numel() == len) && map.len() * dim == len,
            "shapes agree"
        );
        let shape = values.size();
        assert!(
            shape.len() == 2
                && shape[1] == dim as i64
                && map.iter().all(|&at| i64::from(at) < shape[0]),
            "a row gradient {shape:?} for rows of {dim}: every mapped row within it"
        );
        Views {
            p: p.data_ptr() as *mut f32,
            g: values.data_ptr() as *const f32,
            m: m.data_ptr() as *mut f32,
            v: v.data_ptr() as *mut f32,
            len,
            g_len: values.numel(),
            rows: map.as_ptr(),
            dim,
        }
    }
}

/// The L2 norm of all the gradients.
fn global_norm(views: &[Views], threads: usize) -> f64 {
    let lens: Vec<usize> = views.iter().map(|v| v.g_len).collect();
    for_chunks(&lens, threads, &|i, s, e| {
        // SAFETY: `s..e` lies within the gradient's `g_len` elements; only read here.
        let g = unsafe { std::slice::from_raw_parts(views[i].g.add(s), e - s) };
        sum_of_squares(g)
    })
    .sqrt()
}

/// `Σ x²` in f64, in eight independent lanes: one running sum is a chain of dependent
/// additions the compiler may not reorder (nor vectorise); eight are two AVX-512 registers.
fn sum_of_squares(g: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let mut blocks = g.chunks_exact(8);
    for b in &mut blocks {
        for (acc, &x) in lanes.iter_mut().zip(b) {
            *acc += f64::from(x) * f64::from(x);
        }
    }
    let rest: f64 = blocks
        .remainder()
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum();
    lanes.iter().sum::<f64>() + rest
}

/// The clipped AdamW update of every parameter, one pass over its memory.
fn update(views: &[Views], coefs: &[Coef], threads: usize) {
    let lens: Vec<usize> = views.iter().map(|v| v.len).collect();
    for_chunks(&lens, threads, &|i, s, e| {
        let (v, c) = (&views[i], &coefs[i]);
        // SAFETY: chunks are disjoint ranges within each parameter's `len` elements, each
        // handed to one thread; the tensors are distinct allocations.
        let (p, m, vv) = unsafe {
            (
                std::slice::from_raw_parts_mut(v.p.add(s), e - s),
                std::slice::from_raw_parts_mut(v.m.add(s), e - s),
                std::slice::from_raw_parts_mut(v.v.add(s), e - s),
            )
        };
        if v.rows.is_null() {
            // SAFETY: a dense gradient has the parameter's `len` elements.
            let g = unsafe { std::slice::from_raw_parts(v.g.add(s), e - s) };
            span(p, m, vv, Some(g), c);
            return 0.0;
        }
        // Row by row: a row the batch read takes its gradient's row, any other a zero one.
        let mut k = s;
        while k < e {
            let row = k / v.dim;
            let end = ((row + 1) * v.dim).min(e);
            let (a, b) = (k - s, end - s);
            // SAFETY: `row` < the parameter's rows (`k` < `len`); the map has one entry each.
            let at = unsafe { *v.rows.add(row) };
            let g = (at >= 0).then(|| {
                // SAFETY: row `at` of the gradient's rows, from this row's offset `k`.
                unsafe {
                    std::slice::from_raw_parts(
                        v.g.add(at as usize * v.dim + (k - row * v.dim)),
                        end - k,
                    )
                }
            });
            span(&mut p[a..b], &mut m[a..b], &mut vv[a..b], g, c);
            k = end;
        }
        0.0
    });
}

/// AdamW on a span of a parameter: gradient `g` (`None`: zero, as a dense gradient would
/// hold it), in torch's order of operations, so the results agree to rounding.
fn span(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: Option<&[f32]>, c: &Coef) {
    #[inline(always)]
    fn one(p: &mut f32, m: &mut f32, v: &mut f32, g: f32, c: &Coef) {
        let g = g * c.clip;
        let m1 = *m * c.b1 + c.one_minus_b1 * g;
        let v1 = *v * c.b2 + c.one_minus_b2 * (g * g);
        *m = m1;
        *v = v1;
        let denom = v1.sqrt() / c.bc2_sqrt + c.eps;
        *p = *p * c.decay + -c.step_size * (m1 / denom);
    }
    match g {
        Some(g) => {
            for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                one(p, m, v, g, c);
            }
        }
        None => {
            for ((p, m), v) in p.iter_mut().zip(m).zip(v) {
                one(p, m, v, 0.0, c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{Init, VarStore};

    /// A standard-normal variable `name` in optimizer group `group`.
    fn randn(root: &tch::nn::Path, group: usize, name: &str, shape: &[i64]) -> Tensor {
        let init = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        root.set_group(group).var(name, shape, init)
    }

    /// A var store with a decayed weight and an undecayed bias, and a third variable that
    /// never gets a gradient.
    fn store(seed: i64) -> (VarStore, Vec<Tensor>) {
        tch::manual_seed(seed);
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = randn(&root, 0, "w", &[300, 700]);
        let b = root.set_group(1).var("b", &[700], Init::Const(0.5));
        let _unused = root.set_group(0).var("u", &[5], Init::Const(1.0));
        (vs, vec![w, b])
    }

    fn loss(vars: &[Tensor], x: &Tensor) -> Tensor {
        (x.matmul(&vars[0]) + &vars[1])
            .tanh()
            .pow_tensor_scalar(2)
            .sum(Kind::Float)
    }

    /// Runs `steps` steps on fixed inputs; the variables after.
    fn run(which: &str, steps: usize, max_norm: f64) -> Vec<Tensor> {
        let (vs, vars) = store(7);
        tch::manual_seed(11);
        let x = Tensor::randn([16, 300], (Kind::Float, Device::Cpu));
        let lr = |g: usize| if g == 0 { 1e-2 } else { 3e-2 };
        let wd = |g: usize| if g == 0 { 0.1 } else { 0.0 };
        match which {
            "tch" => {
                use tch::nn::OptimizerConfig;
                let mut opt = tch::nn::AdamW {
                    beta1: 0.9,
                    beta2: 0.999,
                    wd: 0.1,
                    eps: 1e-8,
                    amsgrad: false,
                }
                .build(&vs, 1e-2)
                .unwrap();
                opt.set_weight_decay_group(1, 0.0);
                opt.set_lr_group(0, lr(0));
                opt.set_lr_group(1, lr(1));
                for _ in 0..steps {
                    opt.zero_grad();
                    loss(&vars, &x).backward();
                    if max_norm.is_finite() {
                        let grads: Vec<Tensor> = vars.iter().map(Tensor::grad).collect();
                        let refs: Vec<&Tensor> = grads.iter().collect();
                        let c = clip_coefficient(&refs, max_norm);
                        for mut g in grads {
                            let _ = g.g_mul_(&c);
                        }
                    }
                    opt.step();
                }
            }
            _ => {
                let mut opt = AdamW::new(&vs, Hyper::default());
                opt.fused = which == "fused";
                for _ in 0..steps {
                    opt.zero_grad();
                    loss(&vars, &x).backward();
                    opt.step(max_norm, &lr, &wd);
                }
            }
        }
        vars.iter().map(|v| v.detach().copy()).collect()
    }

    fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs().max().double_value(&[]))
            .fold(0.0, f64::max)
    }

    #[test]
    fn one_pass_adamw_is_torchs_adamw_with_clipping() {
        let _rng = crate::torch_rng();
        for max_norm in [f64::INFINITY, 0.5] {
            let reference = run("tch", 20, max_norm);
            let fused = run("fused", 20, max_norm);
            let tensors = run("tensors", 20, max_norm);
            let start = store(7).1;
            eprintln!(
                "{max_norm}: moved {:.3e}, fused {:.3e}, tensors {:.3e}, between {:.3e}",
                max_diff(&reference, &start),
                max_diff(&fused, &reference),
                max_diff(&tensors, &reference),
                max_diff(&fused, &tensors)
            );
            // The steps moved the weights well beyond the agreement asked for.
            assert!(max_diff(&reference, &start) > 0.05, "{max_norm}");
            // All three agree to rounding over 20 steps (an element whose gradient is ~0
            // amplifies the last bit: 2.4e-5 at most here, against 0.21 moved).
            assert!(
                max_diff(&fused, &tensors) < 1e-4,
                "{max_norm}: fused vs tensors"
            );
            assert!(max_diff(&fused, &reference) < 1e-4, "{max_norm}: fused");
            assert!(max_diff(&tensors, &reference) < 1e-4, "{max_norm}: tensors");
        }
    }

    /// An embedding table and a dense weight, trained `steps` steps on batches that read
    /// different rows (some rows in no batch, some in a few), through `.grad()` (`"grad"`) or
    /// through [`AdamW::gradients`] with the table by rows (`"rows"`), fused or as tensors.
    fn run_table(how: &str, fused: bool, steps: usize, shape: [i64; 2], first: i64) -> Vec<Tensor> {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let table = randn(&root, 0, "table", &shape);
        let w = randn(&root, 1, "w", &[shape[1], 3]);
        let mut opt = AdamW::new(&vs, Hyper::default());
        opt.fused = fused;
        let (lr, wd) = (|_: usize| 5e-2, |g: usize| if g == 0 { 0.1 } else { 0.0 });
        for step in 0..steps {
            // Rows `first`..`first` + 41 only, a different window each step, repeats within
            // a batch.
            let ids = Tensor::from_slice(&[0i64, 1, 1, 2, 7, 7, 7, 9])
                .view([2, 4])
                .g_add_scalar(first + (step as i64 * 5) % 32);
            let loss = |words: &Tensor| {
                words
                    .matmul(&w)
                    .tanh()
                    .pow_tensor_scalar(2)
                    .sum(Kind::Float)
            };
            match how {
                "grad" => {
                    opt.zero_grad();
                    loss(&Tensor::embedding(&table, &ids, -1, false, false)).backward();
                    opt.step(0.8, &lr, &wd);
                }
                _ => {
                    let (rows, renumbered) = RowLeaf::gather(&table, &ids);
                    let words = Tensor::embedding(&rows.leaf, &renumbered, -1, false, false);
                    let grads = opt.gradients(&loss(&words), Some(&rows));
                    assert!(matches!(grads[0], Some(Grad::Rows { .. })));
                    assert!(matches!(grads[1], Some(Grad::Dense(_))));
                    opt.step_with(grads, 0.8, &lr, &wd);
                }
            }
        }
        vec![table.detach().copy(), w.detach().copy()]
    }

    #[test]
    fn a_gradient_by_rows_steps_as_the_dense_one() {
        let _rng = crate::torch_rng();
        // A narrow table within one chunk, and the MiniLM's width with the rows read around
        // a chunk boundary (65,536 elements: inside row 170 of 384 wide).
        for (shape, first) in [([50, 8], 0), ([400, 384], 150)] {
            let run = |how, fused, steps| run_table(how, fused, steps, shape, first);
            let start = run("grad", true, 0);
            let dense = run("grad", true, 12);
            let rows = run("rows", true, 12);
            let rows_tensors = run("rows", false, 12);
            let dense_tensors = run("grad", false, 12);
            assert!(
                max_diff(&dense, &start) > 0.1,
                "the steps moved the weights"
            );
            // The rows after the last read were never read: the weight decay alone moved
            // them, in both.
            let unread = |t: &[Tensor]| t[0].narrow(0, first + 41, 5).copy();
            assert!(
                (unread(&dense) - unread(&start))
                    .abs()
                    .max()
                    .double_value(&[])
                    > 0.0
            );
            for (name, other) in [
                ("rows", &rows),
                ("rows as tensors", &rows_tensors),
                ("dense as tensors", &dense_tensors),
            ] {
                // f32 sums in another order (a repeated row's gradient added by rows, not by
                // the embedding's backward), through 12 steps of Adam's division by a small
                // second moment: 1.2e-5 on an AMD EPYC, under 1e-5 on the Xeons. A real error
                // (a row stepped twice or not at all) moves weights by ~5e-2, the rate.
                let d = max_diff(&dense, other);
                assert!(d < 1e-4, "{shape:?} {name}: {d:.3e}");
            }
        }
    }

    #[test]
    fn a_frozen_parameter_gets_no_gradient_and_a_stray_row_leaf_is_refused() {
        let _rng = crate::torch_rng();
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = randn(&root, 0, "w", &[4, 3]);
        let mut frozen = randn(&root, 0, "frozen", &[3]);
        let _ = frozen.requires_grad_(false);
        let opt = AdamW::new(&vs, Hyper::default());
        let loss = (w.sum_dim_intlist(0, false, Kind::Float) * &frozen).sum(Kind::Float);
        let grads = opt.gradients(&loss, None);
        assert_eq!(grads.iter().filter(|g| g.is_some()).count(), 1);
        let other = Tensor::zeros([9, 3], (Kind::Float, Device::Cpu));
        let (stray, _) = RowLeaf::gather(&other, &Tensor::from_slice(&[1i64, 2]));
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            opt.gradients(&stray.leaf.sum(Kind::Float), Some(&stray))
        }));
        assert!(refused.is_err());
    }

    #[test]
    fn sum_of_squares_in_lanes_is_the_plain_sum() {
        for n in [0usize, 1, 7, 8, 9, 1000, 1003] {
            let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let plain: f64 = g.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            assert!(
                (sum_of_squares(&g) - plain).abs() <= 1e-9 * plain.max(1.0),
                "{n}"
            );
        }
    }
}
