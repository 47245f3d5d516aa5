//! Next-token selection: greedy, or sampling with temperature, top-k, top-p, min-p and a
//! repetition penalty, in the order the Hugging Face logits processors apply them. A seed makes
//! sampling reproducible.

use crate::error::{Error, Result};

/// A small, fast, seedable generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// How to pick each next token.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability sums to `top_p`; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 disables.
    pub min_p: f32,
    /// Divide the logits of tokens already seen (multiply when negative); 1 disables.
    pub repetition_penalty: f32,
    /// Fixes the random stream; `None` seeds from the clock.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: None }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, v: f32, rule: &str| Err(Error::Request(format!("`{field}` must be {rule}, got {v}")));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature", self.temperature, ">= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "in [0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty", self.repetition_penalty, "> 0");
        }
        Ok(())
    }
}

/// Picks tokens from logits according to [`SamplingParams`].
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler; fails on out-of-range parameters.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            t as u64 ^ (std::process::id() as u64) << 32
        });
        Ok(Self { params, rng: Rng::new(seed), candidates: Vec::new() })
    }

    /// The next token given the logits of the last position and the tokens seen so far
    /// (prompt and generated; used by the repetition penalty). `logits` is modified.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &tok in &seen {
                if let Some(l) = logits.get_mut(tok as usize) {
                    *l = if *l < 0.0 { *l * p.repetition_penalty } else { *l / p.repetition_penalty };
                }
            }
        }
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / p.temperature;
        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l * inv_t)));
        let desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, desc);
            c.truncate(p.top_k);
        }
        c.sort_unstable_by(desc);
        // Softmax over the candidates (the max is the first).
        let max = c.first().map_or(0.0, |x| x.1);
        let mut sum = 0f64;
        for x in c.iter_mut() {
            x.1 = (x.1 - max).exp();
            sum += x.1 as f64;
        }
        if p.top_p < 1.0 {
            let mut cum = 0f64;
            let mut keep = c.len();
            for (i, x) in c.iter().enumerate() {
                cum += x.1 as f64 / sum;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            // the first candidate has weight exp(0) = 1: the threshold is min_p itself
            c.retain(|x| x.1 >= p.min_p);
        }
        let total: f64 = c.iter().map(|x| x.1 as f64).sum();
        let mut r = self.rng.uniform() * total;
        for x in c.iter() {
            r -= x.1 as f64;
            if r < 0.0 {
                return x.0;
            }
        }
        c.last().map_or_else(|| argmax(logits), |x| x.0)
    }
}

/// Index of the largest logit (the first one on ties, as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(p: SamplingParams) -> Sampler {
        Sampler::new(p).expect("valid params")
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = sampler(SamplingParams::greedy());
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut s = sampler(SamplingParams { repetition_penalty: 2.0, ..SamplingParams::greedy() });
        let mut l = [4.0, 3.0, -1.0];
        // token 0 seen: 4 -> 2, so token 1 (3.0) wins
        assert_eq!(s.sample(&mut l, &[0, 2]), 1);
        assert_eq!(l, [2.0, 3.0, -2.0]);
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_temperature() {
        let mut s = sampler(SamplingParams { temperature: 5.0, top_k: 1, seed: Some(3), ..Default::default() });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [0.0, 1.0, 0.5], &[]), 1);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // probabilities ≈ [0.665, 0.245, 0.090]: top_p 0.6 keeps token 0 only
        let mut s = sampler(SamplingParams { temperature: 1.0, top_p: 0.6, seed: Some(1), ..Default::default() });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [2.0, 1.0, 0.0], &[]), 0);
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        // p1/p0 = e^-1 ≈ 0.37, p2/p0 = e^-5: min_p 0.2 keeps tokens 0 and 1
        let mut s = sampler(SamplingParams { temperature: 1.0, min_p: 0.2, seed: Some(9), ..Default::default() });
        let mut seen = [0usize; 3];
        for _ in 0..400 {
            seen[s.sample(&mut [5.0, 4.0, 0.0], &[]) as usize] += 1;
        }
        assert_eq!(seen[2], 0);
        assert!(seen[0] > seen[1] && seen[1] > 0, "{seen:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens_and_sampling_follows_the_distribution() {
        let p = SamplingParams { temperature: 1.0, seed: Some(42), ..Default::default() };
        let draw = |mut s: Sampler| (0..2000).map(|_| s.sample(&mut [0.0, (3f32).ln()], &[])).collect::<Vec<_>>();
        let a = draw(sampler(p.clone()));
        assert_eq!(a, draw(sampler(p)));
        // p(1) = 3/4
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.04, "{ones}");
    }

    #[test]
    fn out_of_range_parameters_are_rejected_by_name() {
        let e = Sampler::new(SamplingParams { top_p: 0.0, ..Default::default() }).expect_err("top_p 0");
        assert!(e.to_string().contains("top_p"), "{e}");
        let e = Sampler::new(SamplingParams { temperature: -1.0, ..Default::default() }).expect_err("negative t");
        assert!(e.to_string().contains("temperature"), "{e}");
    }
}
