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

use std::sync::atomic::{AtomicUsize, Ordering};

use tch::{Device, Kind, Tensor};

/// Elements per unit of work shared between the threads.
const CHUNK: usize = 1 << 16;

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

    /// Gradients to zero, in place.
    pub fn zero_grad(&mut self) {
        for p in &self.params {
            let mut g = p.var.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Clips the gradients' global L2 norm to `max_norm`, then one step: `lr(group)` and
    /// `weight_decay(group)` for each parameter's group.
    pub fn step(
        &mut self,
        max_norm: f64,
        lr: &dyn Fn(usize) -> f64,
        weight_decay: &dyn Fn(usize) -> f64,
    ) {
        let h = self.hyper;
        let live: Vec<(usize, Tensor)> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.var.grad()))
            .filter(|(_, g)| g.defined())
            .collect();
        if live.is_empty() {
            return;
        }
        let host = self.fused
            && live.iter().all(|(i, g)| {
                let p = &self.params[*i];
                [&p.var, g, &p.m, &p.v].iter().all(|t| on_host_f32(t))
            });
        tch::no_grad(|| {
            if host {
                let views: Vec<Views> = live
                    .iter()
                    .map(|(i, g)| {
                        let p = &self.params[*i];
                        Views::of(&p.var, g, &p.m, &p.v)
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
                let grads: Vec<&Tensor> = live.iter().map(|(_, g)| g).collect();
                let clip = clip_coefficient(&grads, max_norm);
                for (i, g) in &live {
                    let p = &mut self.params[*i];
                    p.steps += 1;
                    tensor_step(p, &(g * &clip), h, lr(p.group), weight_decay(p.group));
                }
            }
        });
    }
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

/// Raw views of one parameter's memory: its value, gradient and moments (`len` f32 each).
/// Valid while the tensors live and nothing else touches them (the step holds them).
#[derive(Clone, Copy)]
struct Views {
    p: *mut f32,
    g: *mut f32,
    m: *mut f32,
    v: *mut f32,
    len: usize,
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
            g: g.data_ptr() as *mut f32,
            m: m.data_ptr() as *mut f32,
            v: v.data_ptr() as *mut f32,
            len,
        }
    }
}

/// Every `(parameter, start, end)` chunk of `views`.
fn chunks(views: &[Views]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for (i, v) in views.iter().enumerate() {
        let mut s = 0;
        while s < v.len {
            let e = (s + CHUNK).min(v.len);
            out.push((i, s, e));
            s = e;
        }
    }
    out
}

/// Runs `work(parameter, its views, start, end)` on every chunk of `views`, over `threads`
/// threads; returns the sum of what each returned.
fn for_chunks(
    views: &[Views],
    threads: usize,
    work: &(dyn Fn(usize, &Views, usize, usize) -> f64 + Sync),
) -> f64 {
    let jobs = chunks(views);
    let next = AtomicUsize::new(0);
    let run = || {
        let mut acc = 0.0;
        loop {
            let j = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(i, s, e)) = jobs.get(j) else {
                return acc;
            };
            acc += work(i, &views[i], s, e);
        }
    };
    let threads = threads.min(jobs.len()).max(1);
    std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads).map(|_| scope.spawn(run)).collect();
        let mine = run();
        mine + others
            .into_iter()
            .map(|h| h.join().expect("an optimizer thread panicked"))
            .sum::<f64>()
    })
}

/// The L2 norm of all the gradients.
fn global_norm(views: &[Views], threads: usize) -> f64 {
    for_chunks(views, threads, &|_, v, s, e| {
        // SAFETY: `s..e` lies within the gradient's `len` elements; only read here.
        let g = unsafe { std::slice::from_raw_parts(v.g.add(s), e - s) };
        g.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
    })
    .sqrt()
}

/// The clipped AdamW update of every parameter, one pass over its memory.
fn update(views: &[Views], coefs: &[Coef], threads: usize) {
    for_chunks(views, threads, &|i, v, s, e| {
        let c = coefs[i];
        // SAFETY: chunks are disjoint ranges within each tensor's `len` elements, each
        // handed to one thread; the four tensors are distinct allocations.
        let (p, g, m, vv) = unsafe {
            (
                std::slice::from_raw_parts_mut(v.p.add(s), e - s),
                std::slice::from_raw_parts(v.g.add(s), e - s),
                std::slice::from_raw_parts_mut(v.m.add(s), e - s),
                std::slice::from_raw_parts_mut(v.v.add(s), e - s),
            )
        };
        // In torch's order of operations, so the results agree to rounding.
        for k in 0..p.len() {
            let g = g[k] * c.clip;
            let m1 = m[k] * c.b1 + c.one_minus_b1 * g;
            let v1 = vv[k] * c.b2 + c.one_minus_b2 * (g * g);
            m[k] = m1;
            vv[k] = v1;
            let denom = v1.sqrt() / c.bc2_sqrt + c.eps;
            p[k] = p[k] * c.decay + -c.step_size * (m1 / denom);
        }
        0.0
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{Init, VarStore};

    /// A var store with a decayed weight and an undecayed bias, and a third variable that
    /// never gets a gradient.
    fn store(seed: i64) -> (VarStore, Vec<Tensor>) {
        tch::manual_seed(seed);
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = root.set_group(0).var(
            "w",
            &[300, 700],
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
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

    #[test]
    fn work_is_split_into_disjoint_chunks_covering_every_element() {
        let big = Tensor::zeros([CHUNK as i64 * 2 + 3], (Kind::Float, Device::Cpu));
        let small = Tensor::zeros([5], (Kind::Float, Device::Cpu));
        let views = [
            Views::of(&big, &big, &big, &big),
            Views::of(&small, &small, &small, &small),
        ];
        let c = chunks(&views);
        assert_eq!(
            c,
            vec![
                (0, 0, CHUNK),
                (0, CHUNK, 2 * CHUNK),
                (0, 2 * CHUNK, 2 * CHUNK + 3),
                (1, 0, 5)
            ]
        );
        let counted = for_chunks(&views, 3, &|_, _, s, e| (e - s) as f64);
        assert_eq!(counted as usize, 2 * CHUNK + 3 + 5);
    }
}
