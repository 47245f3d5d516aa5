//! `herd policy …`: the policy layer checked from outside (JSON lines), region look-ups and the
//! classifier benchmark on XSTest.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use herd_policies::{PolicySet, Subject, Tenant, bench, region};
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
    /// The country of a phone number: {"country": "FR", "eu": true}.
    Region { number: String },
    /// Measure the built-in classifier on labelled prompts (default: XSTest and herd's held-out set).
    Bench {
        /// CSV files with `prompt` and `label` (safe/unsafe) columns.
        #[arg(long = "file")]
        files: Vec<PathBuf>,
        #[arg(long)]
        packs: Option<PathBuf>,
        /// Also list the prompts decided wrongly.
        #[arg(long)]
        mistakes: bool,
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
        PolicyCommand::Bench { files, packs, mistakes } => {
            let set = herd::services::pack_set(packs.as_deref())?;
            let t = Tenant::demo();
            let files = if files.is_empty() {
                vec![repo_file("policies/evals/xstest/xstest_prompts.csv"), repo_file("policies/evals/herd-heldout.csv")]
            } else {
                files
            };
            for f in files {
                let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
                let prompts = bench::parse_csv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
                if prompts.is_empty() {
                    bail!("{}: no prompts", f.display());
                }
                let r = bench::run(&set, &t, &prompts);
                println!("{} — classifier {}, {} prompts", f.display(), set.classifier().name(), r.prompts);
                println!("                 refused   answered");
                println!(
                    "  unsafe prompts  {:>6}   {:>8}   (flagged {:.1} %)",
                    r.true_positives,
                    r.false_negatives,
                    100.0 * r.unsafe_flag_rate
                );
                println!(
                    "  safe prompts    {:>6}   {:>8}   (refused {:.1} %)",
                    r.false_positives,
                    r.true_negatives,
                    100.0 * r.safe_refusal_rate
                );
                println!("  latency per message: p50 {:.0} µs, p99 {:.0} µs", r.p50_us, r.p99_us);
                if mistakes {
                    for (what, kind, prompt) in &r.mistakes {
                        println!("    {what} [{kind}] {prompt}");
                    }
                }
                println!(
                    "{}",
                    json!({"file": f.display().to_string(), "tp": r.true_positives, "fn": r.false_negatives, "fp": r.false_positives, "tn": r.true_negatives, "safe_refusal_rate": r.safe_refusal_rate, "unsafe_flag_rate": r.unsafe_flag_rate, "p50_us": r.p50_us, "p99_us": r.p99_us})
                );
            }
        }
    }
    Ok(())
}
