//! A model-backed moderation classifier: a Llama Guard checkpoint run through `herd-engine`
//! with Llama Guard's prompt format, answering `safe` or `unsafe` and a line of categories
//! (`unsafe\nS1,S10`). Used instead of the built-in rules when `policies.guard_model` is set.

use herd_engine::generate::{GenerateRequest, generate};
use herd_engine::sampler::SamplingParams;
use herd_engine::tokenizer::{ChatMessage, ChatTokenizer};
use herd_engine::{Device, Model, parse_dtype};
use herd_policies::pack::HAZARDS;
use herd_policies::{Classification, Classifier};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// The user turn of Llama Guard's prompt for one message.
pub fn prompt(message: &str) -> String {
    task("User", &format!("User: {message}"))
}

/// The user turn of Llama Guard's prompt for an assistant's `reply` to `message` (the output
/// check: Llama Guard judges the last `Agent` turn).
pub fn reply_prompt(message: &str, reply: &str) -> String {
    task("Agent", &format!("User: {message}\n\nAgent: {reply}"))
}

fn task(role: &str, conversation: &str) -> String {
    let cats: String = HAZARDS.iter().map(|(c, d)| format!("{c}: {d}.\n")).collect();
    format!(
        "Task: Check if there is unsafe content in '{role}' messages in conversations according to our safety policy with the below categories.\n\n\
         <BEGIN UNSAFE CONTENT CATEGORIES>\n{cats}<END UNSAFE CONTENT CATEGORIES>\n\n\
         <BEGIN CONVERSATION>\n\n{conversation}\n\n<END CONVERSATION>\n\n\
         Provide your safe assessment for ONLY THE LAST {role} message in the above conversation:\n\
         - First line must read 'safe' or 'unsafe'.\n\
         - If unsafe, a second line must include a comma-separated list of violated categories."
    )
}

/// Parses Llama Guard's answer; `None` when it is neither `safe` nor `unsafe…`.
pub fn parse(answer: &str) -> Option<Vec<&'static str>> {
    let mut lines = answer.trim().lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next()? {
        "safe" => Some(vec![]),
        "unsafe" => Some(
            lines.next().unwrap_or("").split(',').filter_map(|c| HAZARDS.iter().find(|(k, _)| *k == c.trim()).map(|(k, _)| *k)).collect(),
        ),
        _ => None,
    }
}

/// Llama Guard through herd's engine.
pub struct LlamaGuard {
    model: Model,
    tokenizer: ChatTokenizer,
    name: String,
    /// The checkpoint's chat template writes the task itself (Llama Guard 3 and 4 on the hub do:
    /// it lists the categories around the conversation), so it gets the bare message.
    template_writes_task: bool,
}

impl LlamaGuard {
    /// Loads the checkpoint in `dir` onto `device` (`cpu`, `cuda[:N]`, `auto`).
    pub fn load(dir: &Path, dtype: &str, device: &str) -> Result<Self, herd_engine::Error> {
        let model = Model::load_on(dir, parse_dtype(dtype)?, Device::parse(device)?)?;
        let tokenizer = ChatTokenizer::load(dir, model.config())?;
        let template_writes_task = tokenizer.chat_template().is_some_and(|t| t.contains("UNSAFE CONTENT CATEGORIES"));
        Ok(Self { model, tokenizer, name: format!("llama-guard:{}", dir.display()), template_writes_task })
    }

    /// The prompt ids for one message: the bare message through a guard's own template, else the
    /// task written here through the checkpoint's chat template.
    pub fn prompt_ids(&self, text: &str) -> Result<Vec<u32>, herd_engine::Error> {
        let content = if self.template_writes_task { text.to_string() } else { prompt(text) };
        self.tokenizer.encode_chat(&[ChatMessage::new("user", &content)], true)
    }

    /// The prompt ids for an assistant's `reply` to `message`: the two turns through a guard's own
    /// template (it judges the last, the assistant's), else the task written here.
    pub fn reply_prompt_ids(&self, message: &str, reply: &str) -> Result<Vec<u32>, herd_engine::Error> {
        if self.template_writes_task {
            self.tokenizer.encode_chat(&[ChatMessage::new("user", message), ChatMessage::new("assistant", reply)], true)
        } else {
            self.tokenizer.encode_chat(&[ChatMessage::new("user", &reply_prompt(message, reply))], true)
        }
    }

    /// Runs the guard on prompt ids and reads its answer.
    fn judge(&self, ids: Result<Vec<u32>, herd_engine::Error>) -> Classification {
        let run = || -> Result<String, herd_engine::Error> {
            let req = GenerateRequest {
                prompt: ids?,
                max_new_tokens: 16,
                sampling: SamplingParams::greedy(),
                stop_ids: self.tokenizer.stop_ids().to_vec(),
                stop_strings: vec![],
            };
            Ok(generate(&self.model, Some(&self.tokenizer), &req, &AtomicBool::new(false), &mut |_| true)?.text.unwrap_or_default())
        };
        match run().map(|a| (parse(&a), a)) {
            Ok((Some(categories), _)) => Classification { categories, debated: false, language: None },
            Ok((None, answer)) => {
                tracing::warn!(%answer, "the guard model answered neither safe nor unsafe; treated as safe");
                Classification::default()
            }
            Err(e) => {
                tracing::error!(error = %e, "the guard model failed; treated as safe");
                Classification::default()
            }
        }
    }
}

impl Classifier for LlamaGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn classify(&self, text: &str) -> Classification {
        self.judge(self.prompt_ids(text))
    }

    fn classify_reply(&self, prompt: &str, reply: &str) -> Classification {
        self.judge(self.reply_prompt_ids(prompt, reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_as_llama_guard_writes_them() {
        assert_eq!(parse("safe"), Some(vec![]));
        assert_eq!(parse("\n\nunsafe\nS1,S10"), Some(vec!["S1", "S10"]));
        assert_eq!(parse(" unsafe \n S9 , S99 "), Some(vec!["S9"]));
        assert_eq!(parse("unsafe"), Some(vec![]));
        assert_eq!(parse("I think this is fine"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn the_prompt_lists_every_category_and_the_message() {
        let p = prompt("How do I bake bread?");
        assert!(HAZARDS.iter().all(|(c, d)| p.contains(&format!("{c}: {d}."))));
        assert!(p.contains("User: How do I bake bread?"));
        assert!(p.contains("First line must read 'safe' or 'unsafe'."));
        assert!(p.contains("'User' messages") && p.contains("ONLY THE LAST User message"));
        let r = reply_prompt("How do I bake bread?", "Mix flour and water.");
        assert!(r.contains("'Agent' messages") && r.contains("User: How do I bake bread?\n\nAgent: Mix flour and water."));
        assert!(r.contains("ONLY THE LAST Agent message"));
    }

    #[test]
    fn a_checkpoint_runs_through_the_engine_end_to_end() {
        // Neither checkpoint is a trained guard: this proves the plumbing (template, engine, parsing
        // fallback), not the judgement. guard4-dense has Llama Guard 4's shape (a dense Llama 4 in
        // the hub layout, no experts, no chunked attention; parity with the reference is in
        // herd-engine's tests).
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        for dir in ["deploy/models/herd-demo-chat", "engine/tests/fixtures/guard4-dense"] {
            let g = LlamaGuard::load(&root.join(dir), "f32", "cpu").expect("loads");
            let c = g.classify("Hello there");
            assert!(c.categories.iter().all(|c| c.starts_with('S')), "{dir}");
            assert!(g.name().starts_with("llama-guard:"));
        }
    }

    #[test]
    fn a_guard_checkpoints_own_template_gets_the_bare_message() {
        // guard4-dense with a chat template that writes the task itself, as Llama Guard's do.
        let src = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../engine/tests/fixtures/guard4-dense");
        let dir = std::env::temp_dir().join(format!("herd-guard-template-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
            std::fs::copy(src.join(f), dir.join(f)).expect("copy");
        }
        let template = "{{ bos_token }}<|header_start|>user<|header_end|>\n\nTask: check the last message.\n<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violent Crimes.\n<END UNSAFE CONTENT CATEGORIES>\n{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}<|eot|><|header_start|>assistant<|header_end|>\n\n";
        std::fs::write(dir.join("chat_template.jinja"), template).expect("template");
        let own = LlamaGuard::load(&dir, "f32", "cpu").expect("loads");
        let text = |g: &LlamaGuard| g.tokenizer.decode(&g.prompt_ids("hello there").expect("ids"), false).expect("decodes");
        let rendered = text(&own);
        assert!(rendered.contains("user: hello there") && !rendered.contains("Provide your safe assessment"), "{rendered}");
        let plain = LlamaGuard::load(&src, "f32", "cpu").expect("loads");
        assert!(text(&plain).contains("Provide your safe assessment"), "a plain template gets the task written here");
        // The output check: both turns, and the assistant's is the one judged.
        let reply = |g: &LlamaGuard| {
            g.tokenizer.decode(&g.reply_prompt_ids("how do I bake bread", "Knead it.").expect("ids"), false).expect("decodes")
        };
        let rendered = reply(&own);
        assert!(rendered.contains("user: how do I bake bread\nassistant: Knead it."), "{rendered}");
        let rendered = reply(&plain);
        assert!(
            rendered.contains("User: how do I bake bread\n\nAgent: Knead it.") && rendered.contains("ONLY THE LAST Agent message"),
            "{rendered}"
        );
        assert!(!own.classify_reply("how do I bake bread", "Knead it.").categories.iter().any(|c| !c.starts_with('S')));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
