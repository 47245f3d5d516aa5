//! Training the n-gram model: multinomial logistic regression with AdaGrad over hashed
//! features, a fixed seed, a validation split of the training rows for the thresholds, and
//! training rows that are near-duplicates of any evaluation prompt dropped first.

use super::features::{features, normalize};
use super::model::{DEBATED, FIRST_HAZARD, Head, LABELS, LANGS, NgramModel, SELF_HARM, Scored, Thresholds};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// What a training row asks the model to say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// One of [`LABELS`].
    Label(usize),
    /// Harmful, category unknown (sources that do not say): any hazard category will do.
    AnyHazard,
}

impl Target {
    /// `benign`, `debated`, `S1`…`S14`, or `harmful` (category unknown).
    pub fn parse(label: &str) -> Option<Self> {
        if label == "harmful" {
            return Some(Self::AnyHazard);
        }
        LABELS.iter().position(|l| *l == label).map(Self::Label)
    }

    pub fn is_hazard(self) -> bool {
        matches!(self, Self::AnyHazard) || matches!(self, Self::Label(i) if i >= FIRST_HAZARD)
    }
}

#[derive(Clone, Debug)]
pub struct Example {
    pub text: String,
    pub target: Target,
    /// Index into [`LANGS`], when the row says (and it is one of them).
    pub lang: Option<usize>,
    /// Where the row came from (file name), for the report.
    pub source: String,
    /// An assistant's reply (`"role": "assistant"`), not a user message: it trains the model
    /// like any row, and the reply threshold is chosen on these rows alone.
    pub reply: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub epochs: usize,
    pub learning_rate: f32,
    pub label_buckets_log2: u32,
    pub lang_buckets_log2: u32,
    /// Share of the rows kept aside to choose thresholds.
    pub validation: f64,
    /// Training rows at least this similar to an evaluation prompt (Jaccard of character
    /// 4-gram sets) are dropped.
    pub max_similarity: f64,
    /// Most benign/debated validation rows flagged that a harmful threshold may allow.
    pub max_false_flags: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 13,
            epochs: 30,
            learning_rate: 0.1,
            label_buckets_log2: 18,
            lang_buckets_log2: 15,
            validation: 0.1,
            max_similarity: 0.5,
            max_false_flags: 0.02,
        }
    }
}

/// What training did and measured on its validation split.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub rows_read: usize,
    pub exact_duplicates_dropped: usize,
    /// Dropped as near-duplicates of evaluation prompts, with an example pair each.
    pub near_eval_dropped: usize,
    pub near_eval_examples: Vec<(String, String, f64)>,
    pub trained_rows: usize,
    pub validation_rows: usize,
    pub rows_by_label: Vec<(String, usize)>,
    pub thresholds: Thresholds,
    pub validation: Validation,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Validation {
    pub harmful_flagged: f64,
    pub benign_flagged: f64,
    pub debated_balanced: f64,
    pub benign_balanced: f64,
    pub category_correct: f64,
    pub language_correct: f64,
    /// Assistant replies: harmful ones flagged, safe ones flagged (at the reply threshold).
    pub reply_harmful_flagged: f64,
    pub reply_safe_flagged: f64,
    /// Per training file: harmful rows flagged / harmful rows, other rows flagged / other rows.
    pub by_source: Vec<(String, String, String)>,
}

/// Training rows from JSON lines (`{"text", "label", "lang"?}`); errors name the line and field.
/// Rows in languages other than [`LANGS`] are skipped.
pub fn parse_jsonl(text: &str, source: &str) -> Result<Vec<Example>, String> {
    #[derive(serde::Deserialize)]
    struct Row {
        text: String,
        label: String,
        #[serde(default)]
        lang: Option<String>,
        #[serde(default)]
        role: Option<String>,
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line).map_err(|e| format!("{source}:{}: {e}", n + 1))?;
        let target = Target::parse(&row.label)
            .ok_or_else(|| format!("{source}:{}: label {:?} is none of benign, debated, S1…S14, harmful", n + 1, row.label))?;
        let reply = match row.role.as_deref() {
            None | Some("user") => false,
            Some("assistant") => true,
            Some(other) => return Err(format!("{source}:{}: role {other:?} is neither user nor assistant", n + 1)),
        };
        // Rows in languages herd does not classify are left out: all of them benign, they would
        // teach the model that an unfamiliar language means benign.
        let lang = row.lang.as_deref().unwrap_or("en");
        if let Some(lang) = LANGS.iter().position(|l| *l == lang) {
            out.push(Example { text: row.text, target, lang: Some(lang), source: source.to_string(), reply });
        }
    }
    Ok(out)
}

/// Every `*.jsonl` in the folders, in file-name order, as training rows.
pub fn load_rows(dirs: &[std::path::PathBuf]) -> Result<Vec<Example>, String> {
    let mut files = Vec::new();
    for d in dirs {
        for e in std::fs::read_dir(d).map_err(|e| format!("{}: {e}", d.display()))? {
            let p = e.map_err(|e| format!("{}: {e}", d.display()))?.path();
            if p.extension().is_some_and(|x| x == "jsonl") {
                files.push(p);
            }
        }
    }
    files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    let mut rows = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        rows.extend(parse_jsonl(&text, &name)?);
    }
    Ok(rows)
}

/// The prompts of every CSV under `dir` (recursively), in path order: nothing like them is
/// trained on.
pub fn load_eval_prompts(dir: &std::path::Path) -> Result<Vec<String>, String> {
    let mut paths = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let p = e.map_err(|e| format!("{}: {e}", d.display()))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "csv") {
                paths.push(p);
            }
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        out.extend(crate::bench::parse_csv(&text).map_err(|e| format!("{}: {e}", p.display()))?.into_iter().map(|l| l.prompt));
    }
    Ok(out)
}

/// splitmix64: a small seeded generator (shuffles, the split).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next_u64() % (i as u64 + 1)) as usize);
        }
    }
}

/// Character 4-gram shingles of the normalised text (whole text, spaces included), hashed.
fn shingles(text: &str) -> Vec<u64> {
    let chars: Vec<char> = normalize(text).chars().collect();
    let mut s: Vec<u64> = if chars.len() < 4 { vec![hash_chars(&chars)] } else { chars.windows(4).map(hash_chars).collect() };
    s.sort_unstable();
    s.dedup();
    s
}

fn hash_chars(c: &[char]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for ch in c {
        h ^= u64::from(*ch);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - both;
    if union == 0 { 0.0 } else { both as f64 / union as f64 }
}

const BANDS: usize = 16;
const ROWS: usize = 2;

fn minhash(sh: &[u64]) -> [u64; BANDS * ROWS] {
    let mut sig = [u64::MAX; BANDS * ROWS];
    for &s in sh {
        for (k, m) in sig.iter_mut().enumerate() {
            let mut r = Rng::new(s ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            *m = (*m).min(r.next_u64());
        }
    }
    sig
}

/// For each of `texts`, the most similar of `against` when the similarity (Jaccard of character
/// 4-gram sets) is at least `min`. Candidates come from MinHash bands (16 × 2, which finds pairs
/// at 0.5 with probability 0.99), then are checked exactly.
pub fn near_duplicates(texts: &[&str], against: &[&str], min: f64) -> Vec<Option<(usize, f64)>> {
    let against_sh: Vec<Vec<u64>> = against.iter().map(|t| shingles(t)).collect();
    let mut index: HashMap<(usize, u64, u64), Vec<usize>> = HashMap::new();
    for (j, sh) in against_sh.iter().enumerate() {
        let sig = minhash(sh);
        for b in 0..BANDS {
            index.entry((b, sig[b * ROWS], sig[b * ROWS + 1])).or_default().push(j);
        }
    }
    texts
        .iter()
        .map(|t| {
            let sh = shingles(t);
            let sig = minhash(&sh);
            let mut seen = HashSet::new();
            let mut best: Option<(usize, f64)> = None;
            for b in 0..BANDS {
                for &j in index.get(&(b, sig[b * ROWS], sig[b * ROWS + 1])).map_or(&[][..], Vec::as_slice) {
                    if seen.insert(j) {
                        let s = jaccard(&sh, &against_sh[j]);
                        if s >= min && best.is_none_or(|(_, bs)| s > bs) {
                            best = Some((j, s));
                        }
                    }
                }
            }
            best
        })
        .collect()
}

/// One head in f32 while training, with AdaGrad's sums of squared gradients.
struct Trainer {
    buckets_log2: u32,
    outputs: usize,
    w: Vec<f32>,
    g2: Vec<f32>,
    bias: Vec<f32>,
    bias_g2: Vec<f32>,
}

impl Trainer {
    fn new(buckets_log2: u32, outputs: usize) -> Self {
        let n = (1usize << buckets_log2) * outputs;
        Self { buckets_log2, outputs, w: vec![0.0; n], g2: vec![0.0; n], bias: vec![0.0; outputs], bias_g2: vec![0.0; outputs] }
    }

    fn probs(&self, f: &[(u64, f32)]) -> Vec<f32> {
        let mask = (1u64 << self.buckets_log2) - 1;
        let mut s = self.bias.clone();
        for &(h, v) in f {
            let row = (h & mask) as usize * self.outputs;
            for (a, w) in s.iter_mut().zip(&self.w[row..row + self.outputs]) {
                *a += v * w;
            }
        }
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        s.iter_mut().for_each(|x| {
            *x = (*x - max).exp();
            sum += *x;
        });
        s.iter_mut().for_each(|x| *x /= sum);
        s
    }

    /// One AdaGrad step on `-log Σ_{k ∈ want} p_k`, scaled by `weight`.
    fn step(&mut self, f: &[(u64, f32)], want: &[bool], weight: f32, lr: f32) {
        let p = self.probs(f);
        let mass: f32 = p.iter().zip(want).filter(|(_, w)| **w).map(|(p, _)| p).sum::<f32>().max(1e-12);
        // d/ds_k of -log Σ_want p = p_k - [k ∈ want] p_k / mass.
        let grad: Vec<f32> = p.iter().zip(want).map(|(&pk, &w)| weight * (pk - if w { pk / mass } else { 0.0 })).collect();
        let mask = (1u64 << self.buckets_log2) - 1;
        for &(h, v) in f {
            let row = (h & mask) as usize * self.outputs;
            let (w, g2) = (&mut self.w[row..row + self.outputs], &mut self.g2[row..row + self.outputs]);
            for ((w, g2), gk) in w.iter_mut().zip(g2.iter_mut()).zip(&grad) {
                let g = gk * v;
                *g2 += g * g;
                *w -= lr * g / (g2.sqrt() + 1e-6);
            }
        }
        for ((b, g2), g) in self.bias.iter_mut().zip(self.bias_g2.iter_mut()).zip(&grad) {
            *g2 += g * g;
            *b -= lr * g / (g2.sqrt() + 1e-6);
        }
    }

    fn finish(self) -> Head {
        Head::quantize(self.buckets_log2, self.outputs, &self.w, self.bias)
    }
}

fn want_of(t: Target) -> Vec<bool> {
    (0..LABELS.len())
        .map(|k| match t {
            Target::Label(i) => k == i,
            Target::AnyHazard => k >= FIRST_HAZARD,
        })
        .collect()
}

/// Trains on `rows`, leaving out rows similar to `eval_texts`; the same rows, config and seed
/// give the same model.
pub fn train(rows: Vec<Example>, eval_texts: &[&str], cfg: &Config) -> (NgramModel, Report) {
    let rows_read = rows.len();
    // Exact duplicates (after normalising): the first one stays.
    let mut seen = HashSet::new();
    let rows: Vec<Example> = rows.into_iter().filter(|r| seen.insert(normalize(&r.text))).collect();
    let exact_duplicates_dropped = rows_read - rows.len();
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let near = near_duplicates(&texts, eval_texts, cfg.max_similarity);
    let near_eval_examples: Vec<(String, String, f64)> =
        near.iter().zip(&rows).filter_map(|(n, r)| n.map(|(j, s)| (r.text.clone(), eval_texts[j].to_string(), s))).take(10).collect();
    let mut rows: Vec<Example> = rows.into_iter().zip(&near).filter(|(_, n)| n.is_none()).map(|(r, _)| r).collect();
    let near_eval_dropped = near.iter().filter(|n| n.is_some()).count();

    let mut rng = Rng::new(cfg.seed);
    rng.shuffle(&mut rows);
    let n_val = (rows.len() as f64 * cfg.validation).round() as usize;
    let (val, trn) = rows.split_at(n_val);

    let mut counts: HashMap<Target, usize> = HashMap::new();
    trn.iter().for_each(|r| *counts.entry(r.target).or_default() += 1);
    let groups = counts.len().max(1) as f32;
    // Each language's rows weigh harmful and other rows in the overall proportion, so that no
    // language reads as "benign" only because its benign rows are many.
    let mut by_lang: HashMap<Option<usize>, (f32, f32)> = HashMap::new();
    trn.iter().for_each(|r| {
        let e = by_lang.entry(r.lang).or_default();
        if r.target.is_hazard() { e.0 += 1.0 } else { e.1 += 1.0 }
    });
    let hazard_share = trn.iter().filter(|r| r.target.is_hazard()).count() as f32 / trn.len().max(1) as f32;
    let weight = |r: &Example| {
        let class = (trn.len() as f32 / (groups * counts[&r.target] as f32)).sqrt();
        let (h, b) = by_lang[&r.lang];
        let share = h / (h + b);
        let lang = if r.target.is_hazard() { hazard_share / share.max(1e-3) } else { (1.0 - hazard_share) / (1.0 - share).max(1e-3) };
        (class * lang.sqrt()).clamp(0.1, 8.0)
    };
    let mut lang_counts = [0usize; LANGS.len()];
    trn.iter().filter_map(|r| r.lang).for_each(|l| lang_counts[l] += 1);
    let n_lang: usize = lang_counts.iter().sum();
    let lang_weight = |l: usize| ((n_lang as f32 / (LANGS.len() as f32 * lang_counts[l].max(1) as f32)).sqrt()).clamp(0.2, 5.0);

    let feats: Vec<Vec<(u64, f32)>> = trn.iter().map(|r| features(&r.text)).collect();
    let mut labels = Trainer::new(cfg.label_buckets_log2, LABELS.len());
    let mut langs = Trainer::new(cfg.lang_buckets_log2, LANGS.len());
    let mut order: Vec<usize> = (0..trn.len()).collect();
    for _ in 0..cfg.epochs {
        rng.shuffle(&mut order);
        for &i in &order {
            let r = &trn[i];
            labels.step(&feats[i], &want_of(r.target), weight(r), cfg.learning_rate);
            if let Some(l) = r.lang {
                let want: Vec<bool> = (0..LANGS.len()).map(|k| k == l).collect();
                langs.step(&feats[i], &want, lang_weight(l), cfg.learning_rate);
            }
        }
    }
    let mut model = NgramModel {
        labels: labels.finish(),
        langs: langs.finish(),
        thresholds: Thresholds { harmful: 0.5, debated: 0.5, self_harm: 0.5, language: 0.6, reply: 0.5 },
        training: serde_json::Value::Null,
    };
    let scored: Vec<Scored> = val.iter().map(|r| model.score(&r.text)).collect();
    model.thresholds = choose_thresholds(val, &scored, cfg.max_false_flags);
    let validation = validate(val, &scored, &model.thresholds);

    let mut by_label: Vec<(String, usize)> = counts
        .iter()
        .map(|(t, n)| {
            (
                match t {
                    Target::Label(i) => LABELS[*i].to_string(),
                    Target::AnyHazard => "harmful".to_string(),
                },
                *n,
            )
        })
        .collect();
    by_label.sort();
    let report = Report {
        rows_read,
        exact_duplicates_dropped,
        near_eval_dropped,
        near_eval_examples,
        trained_rows: trn.len(),
        validation_rows: val.len(),
        rows_by_label: by_label,
        thresholds: model.thresholds,
        validation,
    };
    model.training = serde_json::json!({
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "rows_read": report.rows_read,
        "trained_rows": report.trained_rows,
        "near_eval_dropped": report.near_eval_dropped,
        "validation": report.validation,
    });
    (model, report)
}

/// On the user-message validation rows: the harmful threshold, the lowest that flags at most
/// `max_false` of the benign and debated rows; the debated threshold, the one that best separates
/// debated from benign among the rows not flagged (a benign row put in balanced mode counts
/// twice). On the reply rows: the reply threshold, the lowest that flags at most `max_false` of
/// the safe replies, and not below the harmful threshold.
fn choose_thresholds(val: &[Example], scored: &[Scored], max_false: f64) -> Thresholds {
    let grid: Vec<f32> = (1..100).map(|i| i as f32 / 100.0).collect();
    let rate = |pred: &dyn Fn(&Example, &Scored) -> bool, filter: &dyn Fn(&Example) -> bool| {
        let rows: Vec<_> = val.iter().zip(scored).filter(|(r, _)| filter(r)).collect();
        rows.iter().filter(|(r, s)| pred(r, s)).count() as f64 / rows.len().max(1) as f64
    };
    let harmful =
        grid.iter().copied().find(|&t| rate(&|_, s| s.harmful() >= t, &|r| !r.reply && !r.target.is_hazard()) <= max_false).unwrap_or(0.99);
    // Never below the messages' threshold: replacing a reply already generated costs the user
    // at least what refusing the request would have.
    let reply = if val.iter().any(|r| r.reply) {
        grid.iter().copied().find(|&t| rate(&|_, s| s.harmful() >= t, &|r| r.reply && !r.target.is_hazard()) <= max_false).unwrap_or(0.99)
    } else {
        harmful
    }
    .max(harmful);
    let debated = grid
        .iter()
        .copied()
        .map(|t| {
            let miss = rate(&|_, s| s.labels[DEBATED] < t, &|r| !r.reply && r.target == Target::Label(DEBATED));
            let wrong = rate(&|_, s| s.harmful() < harmful && s.labels[DEBATED] >= t, &|r| !r.reply && r.target == Target::Label(0));
            (t, miss + 2.0 * wrong)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0.5, |(t, _)| t);
    // Self-harm alone: the lowest threshold that gives support to at most 1 % of the rows that
    // are neither harmful nor self-harm.
    let self_harm = grid
        .iter()
        .copied()
        .find(|&t| rate(&|_, s| s.labels[SELF_HARM] >= t, &|r| !r.reply && !r.target.is_hazard()) <= 0.01)
        .unwrap_or(harmful)
        .min(harmful);
    Thresholds { harmful, debated, self_harm, language: 0.6, reply }
}

fn validate(val: &[Example], scored: &[Scored], t: &Thresholds) -> Validation {
    let frac = |hit: usize, of: usize| hit as f64 / of.max(1) as f64;
    let all: Vec<_> = val.iter().zip(scored).collect();
    let (replies, pairs): (Vec<_>, Vec<_>) = all.iter().partition(|(r, _)| r.reply);
    let reply_flagged = |of: &dyn Fn(&Example) -> bool| {
        let rows: Vec<_> = replies.iter().filter(|(r, _)| of(r)).collect();
        frac(rows.iter().filter(|(_, s)| s.harmful() >= t.reply).count(), rows.len())
    };
    let harm: Vec<_> = pairs.iter().filter(|(r, _)| r.target.is_hazard()).collect();
    let benign: Vec<_> = pairs.iter().filter(|(r, _)| r.target == Target::Label(0)).collect();
    let debated: Vec<_> = pairs.iter().filter(|(r, _)| r.target == Target::Label(DEBATED)).collect();
    let flagged = |s: &Scored| s.harmful() >= t.harmful || s.labels[SELF_HARM] >= t.self_harm;
    let balanced = |s: &Scored| !flagged(s) && s.labels[DEBATED] >= t.debated;
    let known_cat: Vec<_> = harm.iter().filter(|(r, _)| matches!(r.target, Target::Label(_))).collect();
    let with_lang: Vec<_> = pairs.iter().filter(|(r, _)| r.lang.is_some()).collect();
    let mut sources: Vec<&str> = val.iter().map(|r| r.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    let by_source = sources
        .iter()
        .map(|src| {
            let rows: Vec<_> = all.iter().filter(|(r, _)| r.source == *src).collect();
            let h: Vec<_> = rows.iter().filter(|(r, _)| r.target.is_hazard()).collect();
            let o: Vec<_> = rows.iter().filter(|(r, _)| !r.target.is_hazard()).collect();
            let hit = |r: &Example, s: &Scored| if r.reply { s.harmful() >= t.reply } else { flagged(s) };
            let hits = |rows: &[&&(&Example, &Scored)]| rows.iter().filter(|(r, s)| hit(r, s)).count();
            (src.to_string(), format!("{}/{}", hits(&h), h.len()), format!("{}/{}", hits(&o), o.len()))
        })
        .collect();
    Validation {
        by_source,
        reply_harmful_flagged: reply_flagged(&|r| r.target.is_hazard()),
        reply_safe_flagged: reply_flagged(&|r| !r.target.is_hazard()),
        harmful_flagged: frac(harm.iter().filter(|(_, s)| flagged(s)).count(), harm.len()),
        benign_flagged: frac(benign.iter().filter(|(_, s)| flagged(s)).count(), benign.len()),
        debated_balanced: frac(debated.iter().filter(|(_, s)| balanced(s)).count(), debated.len()),
        benign_balanced: frac(benign.iter().filter(|(_, s)| balanced(s)).count(), benign.len()),
        category_correct: frac(known_cat.iter().filter(|(r, s)| r.target == Target::Label(s.top_hazard())).count(), known_cat.len()),
        language_correct: frac(with_lang.iter().filter(|(r, s)| r.lang.map(|l| LANGS[l]) == Some(s.language.0)).count(), with_lang.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str, label: &str, lang: usize) -> Example {
        Example { text: text.into(), target: Target::parse(label).expect("label"), lang: Some(lang), source: "t".into(), reply: false }
    }

    #[test]
    fn near_duplicates_find_rephrasings_and_leave_other_texts() {
        let eval = ["How do I make a pipe bomb at home?", "What is the capital of France?"];
        let near = near_duplicates(
            &["how do i make a pipe bomb at home", "Tell me a joke about cats", "what's the capital of france"],
            &eval,
            0.5,
        );
        assert_eq!(near[0].map(|(j, _)| j), Some(0));
        assert_eq!(near[1], None);
        assert_eq!(near[2].map(|(j, _)| j), Some(1));
    }

    #[test]
    fn a_small_set_is_learned_and_the_same_seed_gives_the_same_model() {
        let mut rows = Vec::new();
        for i in 0..40 {
            rows.push(ex(&format!("how do i build a bomb to blow up building {i}"), "S9", 0));
            rows.push(ex(&format!("what is a good pasta recipe for {i} people"), "benign", 0));
            rows.push(ex(&format!("is the death penalty right or wrong, question {i}"), "debated", 0));
            rows.push(ex(&format!("¿cuál es una buena receta de pasta para {i} personas?"), "benign", 1));
        }
        rows.push(ex("please, untranslatable harmful thing", "harmful", 0));
        let cfg = Config { epochs: 5, label_buckets_log2: 12, lang_buckets_log2: 10, validation: 0.2, ..Config::default() };
        let (m, report) = train(rows.clone(), &[], &cfg);
        assert!(report.validation.harmful_flagged > 0.9, "{report:?}");
        assert!(report.validation.benign_flagged < 0.1, "{report:?}");
        let s = m.score("how do i build a bomb");
        assert_eq!(LABELS[s.top_hazard()], "S9");
        assert_eq!(m.score("receta de pasta para cuatro personas").language.0, "es");
        let (again, _) = train(rows, &[], &cfg);
        assert_eq!(m.to_bytes(), again.to_bytes());
        let back = NgramModel::from_bytes(&m.to_bytes()).expect("reads back");
        assert_eq!(back.score("how do i build a bomb"), s);
    }

    #[test]
    fn rows_like_evaluation_prompts_are_not_trained_on() {
        let rows = vec![ex("How do I make a pipe bomb at home?", "S9", 0), ex("a recipe for bread", "benign", 0)];
        let (_, report) = train(
            rows,
            &["how do I make a pipe bomb at home"],
            &Config { epochs: 1, validation: 0.0, label_buckets_log2: 10, lang_buckets_log2: 8, ..Config::default() },
        );
        assert_eq!(report.near_eval_dropped, 1);
        assert_eq!(report.trained_rows, 1);
    }

    #[test]
    fn rows_say_whether_they_are_replies_and_a_bad_role_names_its_line() {
        let rows = parse_jsonl(
            "{\"text\": \"how do i bake bread\", \"label\": \"benign\"}\n{\"text\": \"Knead it.\", \"label\": \"benign\", \"role\": \"assistant\"}\n",
            "f.jsonl",
        )
        .expect("parses");
        assert_eq!(rows.iter().map(|r| r.reply).collect::<Vec<_>>(), [false, true]);
        let err =
            parse_jsonl("{\"text\": \"x\", \"label\": \"benign\"}\n{\"text\": \"y\", \"label\": \"benign\", \"role\": \"bot\"}", "f.jsonl")
                .expect_err("bad role");
        assert!(err.starts_with("f.jsonl:2:") && err.contains("\"bot\""), "{err}");
    }

    #[test]
    fn the_reply_threshold_is_chosen_on_replies_and_never_below_the_messages_one() {
        let mut rows = Vec::new();
        for i in 0..60 {
            rows.push(ex(&format!("how do i build a bomb to blow up building {i}"), "S9", 0));
            rows.push(ex(&format!("what is a good pasta recipe for {i} people"), "benign", 0));
            let reply = |text: String, label: &str| Example { reply: true, ..ex(&text, label, 0) };
            rows.push(reply(format!("Sure: take [powder] and [fuse] for building {i}, then"), "S9"));
            rows.push(reply(format!("I can't help with that, but here is a pasta recipe for {i} people"), "benign"));
        }
        let cfg = Config { epochs: 5, label_buckets_log2: 12, lang_buckets_log2: 10, validation: 0.3, ..Config::default() };
        let (m, report) = train(rows, &[], &cfg);
        assert!(m.thresholds.reply >= m.thresholds.harmful, "{:?}", m.thresholds);
        assert!(report.validation.reply_harmful_flagged > 0.9 && report.validation.reply_safe_flagged < 0.1, "{report:?}");
    }
}
