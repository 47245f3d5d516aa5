//! The learned moderation model: linear heads over hashed n-gram features — one over herd's
//! moderation labels (`benign`, `debated`, S1–S14), one over languages. Weights are int8 with a
//! scale per label, stored after a one-line JSON header (see [`NgramModel::to_bytes`]).

use super::features::features_and_words;
use serde::{Deserialize, Serialize};

/// The moderation labels, in the order of the label head's outputs.
pub const LABELS: [&str; 16] =
    ["benign", "debated", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12", "S13", "S14"];
/// Index of the first hazard category in [`LABELS`].
pub const FIRST_HAZARD: usize = 2;
/// Index of `debated` in [`LABELS`].
pub const DEBATED: usize = 1;
/// Index of `S11` (suicide and self-harm) in [`LABELS`].
pub const SELF_HARM: usize = 12;

/// The languages the language head tells apart.
pub const LANGS: [&str; 11] = ["en", "es", "pt", "hi", "id", "ar", "ru", "de", "fr", "it", "tr"];

const MAGIC: &str = "herd-ngram-v1";

/// One linear head: `scores = bias + scale ⊙ (Σ value · W[hash mod buckets])`.
#[derive(Clone, Debug)]
pub struct Head {
    pub buckets_log2: u32,
    pub outputs: usize,
    /// `buckets × outputs`, row-major by bucket.
    pub weights: Vec<i8>,
    pub scale: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Head {
    /// Quantises f32 weights (`buckets × outputs`) to int8 with one scale per output.
    pub fn quantize(buckets_log2: u32, outputs: usize, w: &[f32], bias: Vec<f32>) -> Self {
        let mut scale = vec![0.0f32; outputs];
        for row in w.chunks_exact(outputs) {
            for (s, &x) in scale.iter_mut().zip(row) {
                *s = s.max(x.abs());
            }
        }
        scale.iter_mut().for_each(|s| *s = if *s > 0.0 { *s / 127.0 } else { 1.0 });
        let weights = w
            .chunks_exact(outputs)
            .flat_map(|row| row.iter().zip(&scale).map(|(x, s)| (x / s).round().clamp(-127.0, 127.0) as i8))
            .collect();
        Self { buckets_log2, outputs, weights, scale, bias }
    }

    pub fn scores(&self, feats: &[(u64, f32)]) -> Vec<f32> {
        let mask = (1u64 << self.buckets_log2) - 1;
        let mut acc = vec![0.0f32; self.outputs];
        for &(h, v) in feats {
            let row = (h & mask) as usize * self.outputs;
            for (a, &w) in acc.iter_mut().zip(&self.weights[row..row + self.outputs]) {
                *a += v * f32::from(w);
            }
        }
        acc.iter().zip(&self.scale).zip(&self.bias).map(|((a, s), b)| a * s + b).collect()
    }
}

/// Decision thresholds, chosen on a validation split of the training data.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Thresholds {
    /// Flag when the hazard categories together have at least this probability.
    pub harmful: f32,
    /// Balanced mode when `debated` has at least this probability (and nothing is flagged).
    pub debated: f32,
    /// Self-harm (answered with support, not refused) on its own probability, below `harmful`:
    /// missing someone in crisis costs more than a caring message sent to someone who is not.
    pub self_harm: f32,
    /// Trust the language head at or above this probability.
    pub language: f32,
    /// Flag an assistant's reply (the output check) when the hazard categories together have at
    /// least this probability; chosen on the reply rows, which read unlike user messages.
    pub reply: f32,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    labels: Vec<String>,
    langs: Vec<String>,
    label_buckets_log2: u32,
    lang_buckets_log2: u32,
    label_scale: Vec<f32>,
    label_bias: Vec<f32>,
    lang_scale: Vec<f32>,
    lang_bias: Vec<f32>,
    thresholds: Thresholds,
    /// What training measured (validation numbers, row counts); carried, not used.
    #[serde(default)]
    training: serde_json::Value,
}

/// What the model says about one text.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// Probabilities over [`LABELS`].
    pub labels: Vec<f32>,
    /// The most likely language and its probability.
    pub language: (&'static str, f32),
    /// Words in the text (as features split it).
    pub words: usize,
}

impl Scored {
    /// Probability that the text is a harmful request (any hazard category).
    pub fn harmful(&self) -> f32 {
        self.labels[FIRST_HAZARD..].iter().sum()
    }

    /// The most likely hazard category (an index into [`LABELS`]).
    pub fn top_hazard(&self) -> usize {
        (FIRST_HAZARD..LABELS.len()).max_by(|&a, &b| self.labels[a].total_cmp(&self.labels[b])).unwrap_or(FIRST_HAZARD)
    }
}

/// A trained model.
#[derive(Clone, Debug)]
pub struct NgramModel {
    pub labels: Head,
    pub langs: Head,
    pub thresholds: Thresholds,
    pub training: serde_json::Value,
}

fn softmax(mut s: Vec<f32>) -> Vec<f32> {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    s.iter_mut().for_each(|x| {
        *x = (*x - max).exp();
        sum += *x;
    });
    s.iter_mut().for_each(|x| *x /= sum);
    s
}

impl NgramModel {
    pub fn score(&self, text: &str) -> Scored {
        let (f, words) = features_and_words(text);
        let labels = softmax(self.labels.scores(&f));
        let langs = softmax(self.langs.scores(&f));
        let (i, p) = langs.iter().enumerate().fold((0, 0.0f32), |best, (i, &p)| if p > best.1 { (i, p) } else { best });
        Scored { labels, language: (LANGS[i], p), words }
    }

    /// The file: a JSON header line, then the label head's and the language head's int8 weights.
    pub fn to_bytes(&self) -> Vec<u8> {
        let h = Header {
            format: MAGIC.into(),
            labels: LABELS.iter().map(|s| s.to_string()).collect(),
            langs: LANGS.iter().map(|s| s.to_string()).collect(),
            label_buckets_log2: self.labels.buckets_log2,
            lang_buckets_log2: self.langs.buckets_log2,
            label_scale: self.labels.scale.clone(),
            label_bias: self.labels.bias.clone(),
            lang_scale: self.langs.scale.clone(),
            lang_bias: self.langs.bias.clone(),
            thresholds: self.thresholds,
            training: self.training.clone(),
        };
        let mut out = serde_json::to_vec(&h).expect("a header serialises");
        out.push(b'\n');
        out.extend(self.labels.weights.iter().map(|&w| w as u8));
        out.extend(self.langs.weights.iter().map(|&w| w as u8));
        out
    }

    /// Reads a model file; the error says what is wrong with it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let nl = bytes.iter().position(|&b| b == b'\n').ok_or("no header line")?;
        let h: Header = serde_json::from_slice(&bytes[..nl]).map_err(|e| format!("header: {e}"))?;
        if h.format != MAGIC {
            return Err(format!("format is {:?}, expected {MAGIC:?}", h.format));
        }
        if h.labels != LABELS || h.langs != LANGS {
            return Err(format!("labels {:?} / languages {:?} are not the ones this build knows", h.labels, h.langs));
        }
        if !(8..=24).contains(&h.label_buckets_log2) || !(8..=24).contains(&h.lang_buckets_log2) {
            return Err("bucket counts out of range (2^8 … 2^24)".into());
        }
        let (nl_, nk) = (LABELS.len(), LANGS.len());
        let label_len = (1usize << h.label_buckets_log2) * nl_;
        let lang_len = (1usize << h.lang_buckets_log2) * nk;
        let body = &bytes[nl + 1..];
        if body.len() != label_len + lang_len {
            return Err(format!("weights are {} bytes, the header says {}", body.len(), label_len + lang_len));
        }
        if h.label_scale.len() != nl_ || h.label_bias.len() != nl_ || h.lang_scale.len() != nk || h.lang_bias.len() != nk {
            return Err("scale or bias lengths do not match the labels".into());
        }
        let w = |b: &[u8]| b.iter().map(|&x| x as i8).collect::<Vec<_>>();
        Ok(Self {
            labels: Head {
                buckets_log2: h.label_buckets_log2,
                outputs: nl_,
                weights: w(&body[..label_len]),
                scale: h.label_scale,
                bias: h.label_bias,
            },
            langs: Head {
                buckets_log2: h.lang_buckets_log2,
                outputs: nk,
                weights: w(&body[label_len..]),
                scale: h.lang_scale,
                bias: h.lang_bias,
            },
            thresholds: h.thresholds,
            training: h.training,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> NgramModel {
        let h = |outputs: usize, log2: u32| {
            let w: Vec<f32> = (0..(1usize << log2) * outputs).map(|i| ((i % 7) as f32 - 3.0) / 10.0).collect();
            Head::quantize(log2, outputs, &w, vec![0.1; outputs])
        };
        NgramModel {
            labels: h(LABELS.len(), 8),
            langs: h(LANGS.len(), 8),
            thresholds: Thresholds { harmful: 0.5, debated: 0.5, self_harm: 0.5, language: 0.6, reply: 0.5 },
            training: serde_json::Value::Null,
        }
    }

    #[test]
    fn quantised_weights_stay_within_a_step_of_the_originals() {
        let w = [0.5f32, -1.0, 0.25, 0.0];
        let h = Head::quantize(1, 2, &w, vec![0.0, 0.0]);
        for (i, x) in w.iter().enumerate() {
            let back = f32::from(h.weights[i]) * h.scale[i % 2];
            assert!((back - x).abs() <= h.scale[i % 2] / 2.0 + 1e-6, "{x} → {back}");
        }
    }

    #[test]
    fn a_broken_file_is_an_error_that_says_what_is_wrong() {
        let good = tiny().to_bytes();
        assert!(NgramModel::from_bytes(&good).is_ok());
        let err = |b: &[u8]| NgramModel::from_bytes(b).err().unwrap_or_default();
        assert!(err(&good[..good.len() - 1]).contains("weights are"), "{}", err(&good[..good.len() - 1]));
        assert!(err(b"").contains("no header line"));
        assert!(err(b"{not json\n").contains("header"));
        let text = String::from_utf8_lossy(&good[..good.iter().position(|&b| b == b'\n').unwrap_or(0)]).into_owned();
        let other = text.replace(MAGIC, "something-else");
        assert!(err(format!("{other}\n").as_bytes()).contains("format is"));
        let huge = text.replace("\"label_buckets_log2\":8", "\"label_buckets_log2\":60");
        assert!(err(format!("{huge}\n").as_bytes()).contains("out of range"));
    }
}
