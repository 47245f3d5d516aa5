//! Measuring a classifier on labelled prompts (XSTest and herd's own held-out set): the confusion
//! matrix of refused vs answered, and per-message latency.

use crate::decide::{Action, PolicySet, Subject};
use crate::tenant::Tenant;
use serde::Serialize;
use std::time::Instant;

/// One labelled prompt.
#[derive(Clone, Debug)]
pub struct Labelled {
    pub prompt: String,
    /// True when the prompt should be refused.
    pub unsafe_: bool,
    /// True when the prompt is a debated question (answered in balanced mode; counted as safe).
    pub debated: bool,
    /// Free-form type (XSTest's `type` column).
    pub kind: String,
}

/// The result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub prompts: usize,
    /// Unsafe prompts flagged (refused or given support).
    pub true_positives: usize,
    /// Unsafe prompts answered.
    pub false_negatives: usize,
    /// Safe prompts refused.
    pub false_positives: usize,
    /// Safe prompts answered.
    pub true_negatives: usize,
    pub safe_refusal_rate: f64,
    pub unsafe_flag_rate: f64,
    /// Debated prompts, and how many of them got balanced mode or were refused.
    pub debated: usize,
    pub debated_balanced: usize,
    pub debated_refused: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The prompts decided wrongly, with their type.
    pub mistakes: Vec<(String, String, String)>,
}

/// Parses a CSV with a header holding `prompt` and `label` (`safe` / `unsafe` / `debated`)
/// columns, and optionally `type`. Quoted fields may hold commas and doubled quotes.
pub fn parse_csv(text: &str) -> Result<Vec<Labelled>, String> {
    let rows = csv_rows(text);
    let header = rows.first().ok_or("empty CSV")?;
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let (p, l) = (col("prompt").ok_or("no `prompt` column")?, col("label").ok_or("no `label` column")?);
    let t = col("type");
    rows[1..]
        .iter()
        .filter(|r| r.len() > p.max(l))
        .map(|r| {
            let label = r[l].trim();
            let (unsafe_, debated) = match label {
                "unsafe" => (true, false),
                "safe" => (false, false),
                "debated" => (false, true),
                other => return Err(format!("label must be safe, unsafe or debated, got {other:?}")),
            };
            Ok(Labelled { prompt: r[p].clone(), unsafe_, debated, kind: t.and_then(|i| r.get(i)).cloned().unwrap_or_default() })
        })
        .collect()
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            ('\r', false) => {}
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// How the texts of a benchmark file are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// User messages (the input check).
    Messages,
    /// Assistant replies (the output check).
    Replies,
}

/// Decides every prompt for `tenant` and counts.
pub fn run(set: &PolicySet, tenant: &Tenant, prompts: &[Labelled], read: Read) -> Report {
    let reply_to = (read == Read::Replies).then_some("");
    let mut lat = Vec::with_capacity(prompts.len());
    let (mut tp, mut fnn, mut fp, mut tn) = (0, 0, 0, 0);
    let (mut debated, mut balanced, mut debated_refused) = (0, 0, 0);
    let mut mistakes = Vec::new();
    for p in prompts {
        let t = Instant::now();
        let d = set.evaluate(tenant, &Subject { text: &p.prompt, reply_to, ..Default::default() });
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        let refused = matches!(d.action, Action::Refuse | Action::Support);
        if p.debated {
            debated += 1;
            balanced += usize::from(d.action == Action::Balanced);
            debated_refused += usize::from(refused);
            if d.action != Action::Balanced {
                mistakes.push((format!("not balanced ({:?})", d.action), p.kind.clone(), p.prompt.clone()));
            }
        }
        match (p.unsafe_, refused) {
            (true, true) => tp += 1,
            (true, false) => {
                fnn += 1;
                mistakes.push(("missed".into(), p.kind.clone(), p.prompt.clone()));
            }
            (false, true) => {
                fp += 1;
                mistakes.push((format!("refused {:?}", d.categories), p.kind.clone(), p.prompt.clone()));
            }
            (false, false) => tn += 1,
        }
    }
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0.0);
    Report {
        prompts: prompts.len(),
        true_positives: tp,
        false_negatives: fnn,
        false_positives: fp,
        true_negatives: tn,
        safe_refusal_rate: fp as f64 / (fp + tn).max(1) as f64,
        unsafe_flag_rate: tp as f64 / (tp + fnn).max(1) as f64,
        debated,
        debated_balanced: balanced,
        debated_refused,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        mistakes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_may_hold_commas_quotes_and_newlines() {
        let rows = parse_csv("id,prompt,label\n1,\"Hi, \"\"you\"\"\",safe\n2,plain,unsafe\n3,guns?,debated\n").expect("parses");
        assert_eq!(rows.len(), 3);
        assert!(rows[2].debated && !rows[2].unsafe_);
        assert_eq!(rows[0].prompt, "Hi, \"you\"");
        assert!(rows[1].unsafe_);
    }
}
