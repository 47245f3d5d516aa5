//! Tokenizer (`tokenizer.json` through the `tokenizers` crate), the chat template (Jinja, as the
//! hub defines it: `chat_template.jinja` or `tokenizer_config.json`), and stop tokens.

use crate::config::{TextConfig, token_ids};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Llama 4's end-of-turn, end-of-message and end-of-text tokens: generation stops on each.
pub const STOP_TOKENS: [&str; 3] = ["<|eot|>", "<|eom|>", "<|end_of_text|>"];

/// One chat turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    /// A turn of `role` saying `content`.
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// Tokenizer, chat template and stop tokens of one model folder.
pub struct ChatTokenizer {
    tokenizer: tokenizers::Tokenizer,
    template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    stop_ids: Vec<u32>,
    dir: PathBuf,
}

fn special_token(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|error| Error::Io { path: path.into(), error })?;
    serde_json::from_str(&text).map(Some).map_err(|error| Error::Json { path: path.into(), error })
}

impl ChatTokenizer {
    /// Loads `tokenizer.json`, the chat template and the stop tokens of `dir`.
    pub fn load(dir: &Path, cfg: &TextConfig) -> Result<Self> {
        let tpath = dir.join("tokenizer.json");
        if !tpath.exists() {
            return Err(Error::Tokenizer { path: tpath, message: "file not found".into() });
        }
        let tokenizer =
            tokenizers::Tokenizer::from_file(&tpath).map_err(|e| Error::Tokenizer { path: tpath.clone(), message: e.to_string() })?;
        let tc_path = dir.join("tokenizer_config.json");
        let tc = read_json(&tc_path)?.unwrap_or(Value::Null);
        let jinja = dir.join("chat_template.jinja");
        let template = if jinja.exists() {
            Some(std::fs::read_to_string(&jinja).map_err(|error| Error::Io { path: jinja.clone(), error })?)
        } else {
            match tc.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                // A list of named templates: take "default".
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            }
        };
        let bos_token = special_token(tc.get("bos_token"));
        let eos_token = special_token(tc.get("eos_token"));

        let mut stop_ids: Vec<u32> = STOP_TOKENS.iter().filter_map(|t| tokenizer.token_to_id(t)).collect();
        stop_ids.extend(&cfg.eos_token_ids);
        let gen_path = dir.join("generation_config.json");
        if let Some(g) = read_json(&gen_path)?
            && let Some(v) = g.get("eos_token_id").filter(|v| !v.is_null())
        {
            stop_ids.extend(token_ids(v).ok_or_else(|| Error::Config {
                path: gen_path.clone(),
                field: "eos_token_id".into(),
                message: format!("expected an id or a list of ids, got {v}"),
            })?);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Self { tokenizer, template, bos_token, eos_token, stop_ids, dir: dir.to_path_buf() })
    }

    /// Token ids of `text`; `add_special` adds the tokenizer's own specials (BOS), as the
    /// reference's `add_special_tokens`.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer { path: self.dir.join("tokenizer.json"), message: e.to_string() })
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| Error::Tokenizer { path: self.dir.join("tokenizer.json"), message: e.to_string() })
    }

    /// Id of a token string.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Ids generation stops on: `<|eot|>`, `<|eom|>`, `<|end_of_text|>` and the configured EOS ids.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The chat template's source, when the checkpoint has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.template.as_deref()
    }

    /// Renders the chat template as the hub does (`trim_blocks`, `lstrip_blocks`, Python string
    /// methods, `raise_exception`).
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template =
            self.template.as_deref().ok_or_else(|| Error::Template(format!("{}: the model has no chat template", self.dir.display())))?;
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |_fmt: String| -> String { String::new() });
        env.add_template("chat", template).map_err(|e| Error::Template(e.to_string()))?;
        let tmpl = env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        })
        .map_err(|e| Error::Template(e.to_string()))
    }

    /// The prompt ids of a conversation: the rendered template, encoded without adding specials
    /// (the template writes them), as `apply_chat_template(..., tokenize=True)` does.
    pub fn encode_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, add_generation_prompt)?;
        self.encode(&text, false)
    }
}

/// Turns a growing list of generated ids into text pieces as they become printable (a piece is
/// held back while it ends inside a multi-byte character).
#[derive(Default)]
pub struct TextStreamer {
    ids: Vec<u32>,
    printed: usize,
}

impl TextStreamer {
    /// Adds one id; returns the new text, if any is ready.
    pub fn push(&mut self, tok: &ChatTokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = tok.decode(&self.ids, true)?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.printed || !text.is_char_boundary(self.printed) {
            return Ok(None);
        }
        let piece = text[self.printed..].to_string();
        self.printed = text.len();
        Ok(Some(piece))
    }
}
