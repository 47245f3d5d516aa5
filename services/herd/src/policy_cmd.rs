//! `herd policy …`: the policy layer checked from outside (JSON lines), region look-ups and the
//! classifier benchmark on XSTest.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use herd_policies::learned::model::NgramModel;
use herd_policies::learned::{Combine, train};
use herd_policies::{Classifier, LearnedClassifier, PolicySet, RuleClassifier, Subject, Tenant, bench, region};
use serde::Deserialize;
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Decide JSON lines from stdin ({"text", "phone", "platform", "locale", "has_image"}); one JSON line out per input.
    Eval {
        /// Folder of policy packs (default: the shipped packs).
        #[arg(long)]
        packs: Option<PathBuf>,
        /// Tenant policy file (TOML; default: the demo tenant).
        #[arg(long)]
        tenant: Option<PathBuf>,
    },
    /// The moderation model's scores for JSON lines from stdin ({"text"}): the hazard total, each
    /// label's probability, the language, and what the rules find (why a message was flagged).
    Score {
        /// A model file written by `herd policy train` instead of the shipped one.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// The country of a phone number: {"country": "FR", "eu": true}.
    Region { number: String },
    /// Measure classifiers side by side on labelled prompts (default: XSTest, herd's held-out
    /// sets in every language).
    Bench {
        /// CSV files with `prompt` and `label` (safe/unsafe/debated) columns.
        #[arg(long = "file")]
        files: Vec<PathBuf>,
        /// CSV files of assistant replies (`prompt` holds the reply), checked as the output check
        /// does (default, when no --file is given either: policies/evals/replies/en.csv).
        #[arg(long = "replies")]
        replies: Vec<PathBuf>,
        #[arg(long)]
        packs: Option<PathBuf>,
        /// Classifiers to compare: rules, ngram, ngram+rules (repeatable; default all three).
        #[arg(long = "classifier")]
        classifiers: Vec<String>,
        /// Also list the prompts decided wrongly.
        #[arg(long)]
        mistakes: bool,
        /// A model file written by `herd policy train` to measure instead of the shipped one.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Train the moderation model from policies/data (fixed seed: the same data gives the same
    /// file) and write it with its training report.
    Train {
        /// Folders of training JSON lines (default: policies/data/train and policies/data/registry).
        #[arg(long = "data")]
        data: Vec<PathBuf>,
        /// Folder of evaluation CSVs; training rows like any of their prompts are dropped.
        #[arg(long, default_value = "policies/evals")]
        evals: PathBuf,
        #[arg(long, default_value = "policies/models/moderation-ngram.bin")]
        out: PathBuf,
        #[arg(long, default_value_t = 13)]
        seed: u64,
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        /// AdaGrad's learning rate.
        #[arg(long, default_value_t = 0.1)]
        learning_rate: f32,
    },
}

#[derive(Deserialize)]
struct EvalInput {
    text: String,
    phone: Option<String>,
    platform: Option<String>,
    locale: Option<String>,
    #[serde(default)]
    has_image: bool,
}

fn tenant(path: Option<&Path>, set: &PolicySet) -> Result<Tenant> {
    let t = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Tenant::parse(&text, &p.display().to_string()).map_err(anyhow::Error::msg)?
        }
        None => Tenant::demo(),
    };
    set.check_tenant(&t).map_err(anyhow::Error::msg)?;
    Ok(t)
}

fn repo_file(rel: &str) -> PathBuf {
    // Next to the working directory (a checkout), else next to the binary's checkout.
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

pub fn run(args: PolicyArgs) -> Result<()> {
    match args.command {
        PolicyCommand::Region { number } => {
            let country = region::country_of_phone(&number);
            let eu = country.as_ref().map(|c| herd_policies::region::Groups::builtin().is_eu(c));
            println!("{}", json!({"country": country, "eu": eu}));
        }
        PolicyCommand::Eval { packs, tenant: tenant_file } => {
            let set = herd::services::pack_set(packs.as_deref())?;
            let t = tenant(tenant_file.as_deref(), &set)?;
            let stdin = std::io::stdin();
            let mut out = std::io::stdout().lock();
            for (n, line) in stdin.lock().lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let input: EvalInput = match serde_json::from_str(&line) {
                    Ok(i) => i,
                    Err(e) => {
                        writeln!(out, "{}", json!({"error": format!("line {}: {e}", n + 1)}))?;
                        continue;
                    }
                };
                let d = set.evaluate(
                    &t,
                    &Subject {
                        text: &input.text,
                        phone: input.phone.as_deref(),
                        platform: input.platform.as_deref(),
                        locale: input.locale.as_deref(),
                        has_image: input.has_image,
                        ..Default::default()
                    },
                );
                writeln!(
                    out,
                    "{}",
                    json!({"action": d.action, "categories": d.categories, "country": d.country, "eu": d.eu, "rules": d.rules})
                )?;
            }
        }
        PolicyCommand::Score { model } => score_cmd(&load_model(model.as_deref())?)?,
        PolicyCommand::Bench { files, replies, packs, classifiers, mistakes, model } => {
            bench_cmd(files, replies, packs.as_deref(), classifiers, mistakes, &load_model(model.as_deref())?)?
        }
        PolicyCommand::Train { data, evals, out, seed, epochs, learning_rate } => {
            train_cmd(data, &evals, &out, seed, epochs, learning_rate)?
        }
    }
    Ok(())
}

/// The model in `path`, else the shipped one.
fn load_model(path: Option<&Path>) -> Result<NgramModel> {
    Ok(match path {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            NgramModel::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => LearnedClassifier::shared().model().clone(),
    })
}

fn score_cmd(model: &NgramModel) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        #[derive(Deserialize)]
        struct Input {
            text: String,
        }
        let text = match serde_json::from_str::<Input>(&line) {
            Ok(i) => i.text,
            Err(e) => {
                writeln!(out, "{}", json!({"error": format!("line {}: {e}", n + 1)}))?;
                continue;
            }
        };
        let s = model.score(&text);
        let labels: serde_json::Map<String, serde_json::Value> =
            herd_policies::learned::model::LABELS.iter().zip(&s.labels).map(|(l, p)| (l.to_string(), json!(p))).collect();
        let rules = RuleClassifier.classify(&text);
        writeln!(
            out,
            "{}",
            json!({"harmful": s.harmful(), "labels": labels, "language": s.language.0, "language_p": s.language.1,
                   "rules": rules.categories, "rules_debated": rules.debated})
        )?;
    }
    Ok(())
}

/// The classifier called `name`, with `model` where it has one.
fn classifier(name: &str, model: &NgramModel) -> Result<Box<dyn Classifier>> {
    Ok(match name {
        "rules" => Box::new(RuleClassifier),
        "ngram" => Box::new(LearnedClassifier::new(model.clone(), Combine::Model)),
        "ngram+rules" => Box::new(LearnedClassifier::new(model.clone(), Combine::Union)),
        other => bail!("--classifier {other:?}: expected rules, ngram or ngram+rules"),
    })
}

/// The default benchmark files: XSTest, then herd's held-out sets (English first).
fn default_bench_files() -> Result<Vec<PathBuf>> {
    let mut files = vec![repo_file("policies/evals/xstest/xstest_prompts.csv"), repo_file("policies/evals/herd-heldout.csv")];
    let dir = repo_file("policies/evals/heldout");
    let mut held: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    held.sort_by_key(|p| (p.file_stem().is_none_or(|s| s != "en"), p.clone()));
    files.extend(held);
    Ok(files)
}

fn bench_cmd(
    files: Vec<PathBuf>,
    replies: Vec<PathBuf>,
    packs: Option<&Path>,
    classifiers: Vec<String>,
    mistakes: bool,
    model: &NgramModel,
) -> Result<()> {
    let t = Tenant::demo();
    let (files, replies) = if files.is_empty() && replies.is_empty() {
        (default_bench_files()?, vec![repo_file("policies/evals/replies/en.csv")])
    } else {
        (files, replies)
    };
    let files = files.into_iter().map(|f| (f, bench::Read::Messages)).chain(replies.into_iter().map(|f| (f, bench::Read::Replies)));
    let names = if classifiers.is_empty() { vec!["rules".into(), "ngram".into(), "ngram+rules".into()] } else { classifiers };
    let sets: Vec<PolicySet> =
        names.iter().map(|n| Ok(herd::services::pack_set(packs)?.with_classifier(classifier(n, model)?))).collect::<Result<_>>()?;
    println!(
        "{:<44} {:<12} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "file", "classifier", "prompts", "unsafe↑", "safe✗", "deb.bal", "deb.ref", "p50 µs", "p99 µs"
    );
    for (f, read) in files {
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let prompts = bench::parse_csv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        if prompts.is_empty() {
            bail!("{}: no prompts", f.display());
        }
        for set in &sets {
            let r = bench::run(set, &t, &prompts, read);
            let pct = |a: usize, b: usize| if b == 0 { "-".to_string() } else { format!("{:.1}%", 100.0 * a as f64 / b as f64) };
            let name = f.display().to_string();
            let name = name.trim_start_matches("./");
            println!(
                "{:<44} {:<12} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8.0} {:>8.0}",
                if read == bench::Read::Replies { format!("{name} (replies)") } else { name.to_string() },
                set.classifier().name(),
                r.prompts,
                pct(r.true_positives, r.true_positives + r.false_negatives),
                pct(r.false_positives, r.false_positives + r.true_negatives),
                pct(r.debated_balanced, r.debated),
                pct(r.debated_refused, r.debated),
                r.p50_us,
                r.p99_us
            );
            if mistakes {
                for (what, kind, prompt) in &r.mistakes {
                    println!("    {what} [{kind}] {prompt}");
                }
            }
        }
    }
    println!(
        "unsafe↑: unsafe prompts refused or given support; safe✗: safe and debated prompts refused; deb.bal / deb.ref: debated prompts in balanced mode / refused."
    );
    Ok(())
}

fn train_cmd(data: Vec<PathBuf>, evals: &Path, out: &Path, seed: u64, epochs: usize, learning_rate: f32) -> Result<()> {
    let data = if data.is_empty() { vec![repo_file("policies/data/train"), repo_file("policies/data/registry")] } else { data };
    let rows = train::load_rows(&data).map_err(anyhow::Error::msg)?;
    if rows.is_empty() {
        bail!("no training rows in {}", data.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    let held = train::load_eval_prompts(evals).map_err(anyhow::Error::msg)?;
    let held: Vec<&str> = held.iter().map(String::as_str).collect();
    let cfg = train::Config { seed, epochs, learning_rate, ..train::Config::default() };
    let t = std::time::Instant::now();
    let (model, report) = train::train(rows, &held, &cfg);
    eprintln!("trained in {:.1} s on {} rows ({} evaluation prompts kept out)", t.elapsed().as_secs_f64(), report.trained_rows, held.len());
    std::fs::write(out, model.to_bytes()).with_context(|| format!("writing {}", out.display()))?;
    let report_path = out.with_extension("json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("wrote {} and {}", out.display(), report_path.display());
    Ok(())
}
