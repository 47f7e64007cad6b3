//! The instant baseline: TF-IDF over word 1–2-grams and character 2–5-grams (within word
//! boundaries, like scikit-learn's `char_wb`), hashed into a fixed space, then logistic
//! regression trained with AdaGrad. Own sparse code rather than `linfa`: the hashed features
//! need no vocabulary pass, the weights are two flat vectors saved as safetensors, and scoring
//! a tweet is one sparse dot product.

use std::collections::HashMap;
use std::path::Path;

use tch::Tensor;

use crate::ModelError;
use flagship_core::labels::Example;
use flagship_core::rng::Rng;

/// Settings of the linear baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearOptions {
    /// log2 of the hashed feature space (20 → 1,048,576 features).
    pub dims_log2: u32,
    pub epochs: usize,
    pub learning_rate: f64,
    /// L2 penalty per update on the active features.
    pub l2: f64,
    /// Features (hash buckets) seen in fewer training texts than this are ignored.
    pub min_df: u32,
    pub seed: u64,
}

impl Default for LinearOptions {
    fn default() -> Self {
        LinearOptions {
            dims_log2: 20,
            // Chosen with `examples/linear_grid.rs` on TweetEval (held-out F2 at 40 %).
            epochs: 4,
            learning_rate: 0.3,
            l2: 1e-4,
            min_df: 2,
            seed: 42,
        }
    }
}

/// A sparse row: feature indices and values.
pub type Sparse = Vec<(u32, f32)>;

fn fnv1a(namespace: u8, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(namespace);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            eat(b' ');
        }
        p.bytes().for_each(&mut eat);
    }
    h
}

/// Raw sublinear term frequencies of the two blocks, each L2-normalised later after IDF.
fn counts(text: &str, mask: u64) -> [HashMap<u32, f32>; 2] {
    let lower = text.to_lowercase();
    let mut words: HashMap<u32, f32> = HashMap::new();
    let tokens: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| t.chars().nth(1).is_some())
        .collect();
    for (i, t) in tokens.iter().enumerate() {
        *words.entry((fnv1a(b'w', &[t]) & mask) as u32).or_default() += 1.0;
        if let Some(next) = tokens.get(i + 1) {
            *words
                .entry((fnv1a(b'w', &[t, next]) & mask) as u32)
                .or_default() += 1.0;
        }
    }
    let mut chars: HashMap<u32, f32> = HashMap::new();
    let mut buf = String::new();
    for word in lower.split_whitespace() {
        let padded: Vec<char> = std::iter::once(' ')
            .chain(word.chars())
            .chain(std::iter::once(' '))
            .collect();
        for n in 2..=5 {
            for gram in padded.windows(n) {
                buf.clear();
                buf.extend(gram);
                *chars
                    .entry((fnv1a(b'c', &[&buf]) & mask) as u32)
                    .or_default() += 1.0;
            }
        }
    }
    for m in [&mut words, &mut chars] {
        for v in m.values_mut() {
            *v = 1.0 + v.ln();
        }
    }
    [words, chars]
}

/// TF-IDF + logistic regression over hashed n-grams.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    pub dims_log2: u32,
    pub idf: Vec<f32>,
    pub weight: Vec<f32>,
    pub bias: f32,
}

impl LinearModel {
    fn mask(&self) -> u64 {
        (1u64 << self.dims_log2) - 1
    }

    /// The TF-IDF row of a text: each block weighted by IDF and L2-normalised, then summed.
    pub fn features(&self, text: &str) -> Sparse {
        let mut row: std::collections::BTreeMap<u32, f32> = Default::default();
        for block in counts(text, self.mask()) {
            let mut weighted: Vec<(u32, f32)> = block
                .into_iter()
                .map(|(j, tf)| (j, tf * self.idf[j as usize]))
                .collect();
            // Hash-map order differs between processes; sum in index order so a text scores
            // to the same bits everywhere (a probability equal to the threshold must stay so).
            weighted.sort_unstable_by_key(|(j, _)| *j);
            let norm = weighted.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                for (j, v) in weighted {
                    if v != 0.0 {
                        *row.entry(j).or_default() += v / norm;
                    }
                }
            }
        }
        row.into_iter().collect()
    }

    fn logit(&self, row: &Sparse) -> f32 {
        self.bias
            + row
                .iter()
                .map(|&(j, v)| self.weight[j as usize] * v)
                .sum::<f32>()
    }

    /// Probability of "needs support" for each text.
    pub fn probabilities(&self, texts: &[&str]) -> Vec<f32> {
        texts
            .iter()
            .map(|t| sigmoid(self.logit(&self.features(t))))
            .collect()
    }

    /// Fits IDF and the weights on `train`.
    pub fn train(train: &[Example], opts: &LinearOptions) -> Result<LinearModel, ModelError> {
        if train.is_empty() {
            return Err(ModelError::Data("no training examples".into()));
        }
        let dims = 1usize << opts.dims_log2;
        let mask = (dims - 1) as u64;
        let raw: Vec<[HashMap<u32, f32>; 2]> =
            train.iter().map(|e| counts(&e.text, mask)).collect();
        let mut df = vec![0u32; dims];
        for doc in &raw {
            let mut seen: Vec<u32> = doc.iter().flat_map(|b| b.keys().copied()).collect();
            seen.sort_unstable();
            seen.dedup();
            for j in seen {
                df[j as usize] += 1;
            }
        }
        let n = train.len() as f32;
        let idf: Vec<f32> = df
            .iter()
            .map(|&d| {
                if d < opts.min_df {
                    0.0
                } else {
                    ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0
                }
            })
            .collect();
        let mut model = LinearModel {
            dims_log2: opts.dims_log2,
            idf,
            weight: vec![0.0; dims],
            bias: 0.0,
        };
        drop(raw);
        let rows: Vec<Sparse> = train.iter().map(|e| model.features(&e.text)).collect();
        let mut g2 = vec![0f32; dims];
        let mut g2_bias = 0f32;
        let lr = opts.learning_rate as f32;
        let l2 = opts.l2 as f32;
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let mut rng = Rng::new(opts.seed);
        for _ in 0..opts.epochs {
            rng.shuffle(&mut order);
            for &i in &order {
                let y = if train[i].need_support { 1.0 } else { 0.0 };
                let g = sigmoid(model.logit(&rows[i])) - y;
                for &(j, v) in &rows[i] {
                    let j = j as usize;
                    let grad = g * v + l2 * model.weight[j];
                    g2[j] += grad * grad;
                    model.weight[j] -= lr * grad / (g2[j].sqrt() + 1e-8);
                }
                g2_bias += g * g;
                model.bias -= lr * g / (g2_bias.sqrt() + 1e-8);
            }
        }
        Ok(model)
    }

    /// Writes `linear.safetensors` (idf, weight, bias) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join("linear.safetensors");
        Tensor::write_safetensors(
            &[
                ("idf", Tensor::from_slice(&self.idf)),
                ("weight", Tensor::from_slice(&self.weight)),
                ("bias", Tensor::from_slice(&[self.bias])),
            ],
            &path,
        )?;
        Ok(())
    }

    /// Reads `linear.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<LinearModel, ModelError> {
        let path = dir.join("linear.safetensors");
        let bad = |message: String| ModelError::BadFile {
            path: path.clone(),
            message,
        };
        let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .collect();
        let get = |name: &str| -> Result<Vec<f32>, ModelError> {
            let t = tensors
                .get(name)
                .ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
            Vec::<f32>::try_from(t.to_kind(tch::Kind::Float)).map_err(|e| bad(e.to_string()))
        };
        let (idf, weight, bias) = (get("idf")?, get("weight")?, get("bias")?);
        let dims = idf.len();
        if !dims.is_power_of_two() || weight.len() != dims || bias.len() != 1 {
            return Err(bad(format!(
                "idf has {dims} values, weight {}, bias {} (want equal powers of two and 1)",
                weight.len(),
                bias.len()
            )));
        }
        Ok(LinearModel {
            dims_log2: dims.trailing_zeros(),
            idf,
            weight,
            bias: bias[0],
        })
    }
}

pub(crate) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str, need_support: bool) -> Example {
        Example {
            text: text.into(),
            need_support,
            label: None,
        }
    }

    #[test]
    fn features_are_normalised_blocks() {
        let m = LinearModel {
            dims_log2: 16,
            idf: vec![1.0; 1 << 16],
            weight: vec![0.0; 1 << 16],
            bias: 0.0,
        };
        let row = m.features("Webb sees the early universe");
        let norm2: f32 = row.iter().map(|(_, v)| v * v).sum();
        // Two unit blocks (words, chars) whose hashes rarely collide: squared norm ≈ 2.
        assert!((norm2 - 2.0).abs() < 0.1, "{norm2}");
        assert!(m.features("").is_empty());
        // Same text, same bits, whatever order the per-text hash maps iterate in.
        let text = "Webb's mirror: 18 segments, one telescope, many many photons #JWST";
        let first = m.features(text);
        for _ in 0..50 {
            assert_eq!(m.features(text), first);
        }
        assert_eq!(m.features("WEBB"), m.features("webb"));
    }

    #[test]
    fn learns_a_separable_toy_task_and_round_trips() {
        let mut data = Vec::new();
        for i in 0..40 {
            data.push(ex(&format!("the launch was awful and broken {i}"), true));
            data.push(ex(&format!("what a lovely beautiful image {i}"), false));
        }
        let m = LinearModel::train(
            &data,
            &LinearOptions {
                dims_log2: 16,
                ..Default::default()
            },
        )
        .unwrap();
        let p = m.probabilities(&["awful broken launch", "beautiful lovely image"]);
        assert!(p[0] > 0.8 && p[1] < 0.2, "{p:?}");
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        assert_eq!(LinearModel::load(dir.path()).unwrap(), m);
    }
}
