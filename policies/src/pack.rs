//! Policy packs: versioned TOML documents, validated on load. An unknown key, a bad country code
//! or a rule that references a missing message is an error naming the file, line and field.

use crate::region::{Groups, is_country};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use toml::Spanned;

/// A pack that failed to load.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct PackError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// Whether a rule acts or only records what it would have done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// A feature end users may be allowed or denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    TextChat,
    ImageUnderstanding,
}

/// What a moderation rule does with its categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModAction {
    Refuse,
    Support,
    Allow,
    Balanced,
}

/// What a region rule does when the user's country is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    #[default]
    Allow,
    Block,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// End users by country / language, per feature.
    Region,
    /// Moderation categories → action.
    Moderation,
    /// New users of a tenant above the MAU threshold without Meta's license.
    Mau,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    pack: PackMeta,
    #[serde(default)]
    groups: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    messages: BTreeMap<String, BTreeMap<String, String>>,
    license: Option<License>,
    moderation: Option<Moderation>,
    #[serde(default)]
    rules: Vec<RuleFile>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PackMeta {
    pub name: String,
    pub version: u32,
    #[serde(default)]
    pub description: String,
}

/// Licensee terms (the `llama4-license` pack).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct License {
    /// Monthly active users above which Meta's separate license is needed.
    pub mau_threshold: u64,
    /// The attribution a product must show ("Built with Llama").
    pub attribution: String,
    /// Principal places of business that may not activate a multimodal Llama 4 model.
    #[serde(default)]
    pub multimodal_denied_licensee_countries: Vec<String>,
}

/// Balanced-mode texts (the `balanced-moderation` pack).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Moderation {
    /// System prompt for turns on debated topics.
    pub balanced_system_prompt: String,
    /// Added when a balanced answer lectured or took one side, for the one regeneration.
    pub stronger_instruction: String,
    /// Phrases that mark a lecturing answer.
    #[serde(default)]
    pub lecturing_phrases: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: Spanned<String>,
    kind: RuleKind,
    #[serde(default)]
    mode: Mode,
    feature: Option<Feature>,
    #[serde(default)]
    deny_countries: Vec<Spanned<String>>,
    #[serde(default)]
    allow_countries: Vec<Spanned<String>>,
    #[serde(default)]
    allow_languages: Vec<String>,
    unknown_country: Option<Unknown>,
    #[serde(default)]
    categories: Vec<Spanned<String>>,
    action: Option<ModAction>,
    message: Option<Spanned<String>>,
}

/// A validated rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rule {
    pub id: String,
    pub kind: RuleKind,
    pub mode: Mode,
    pub feature: Option<Feature>,
    pub deny_countries: Vec<String>,
    pub allow_countries: Vec<String>,
    pub allow_languages: Vec<String>,
    pub unknown_country: Unknown,
    pub categories: Vec<String>,
    pub action: Option<ModAction>,
    pub message: Option<String>,
}

/// A validated pack.
#[derive(Clone, Debug)]
pub struct Pack {
    pub meta: PackMeta,
    pub groups: BTreeMap<String, Vec<String>>,
    /// Message id → language → text (every message has `en`).
    pub messages: BTreeMap<String, BTreeMap<String, String>>,
    pub license: Option<License>,
    pub moderation: Option<Moderation>,
    pub rules: Vec<Rule>,
}

/// Moderation categories: Llama Guard's hazard taxonomy S1–S14, and `debated` for debated topics.
pub const CATEGORIES: [&str; 15] = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12", "S13", "S14", "debated"];

/// Llama Guard's hazard categories with their names, as its prompt lists them (and the
/// dashboard shows them).
pub const HAZARDS: [(&str, &str); 14] = [
    ("S1", "Violent Crimes"),
    ("S2", "Non-Violent Crimes"),
    ("S3", "Sex Crimes"),
    ("S4", "Child Sexual Exploitation"),
    ("S5", "Defamation"),
    ("S6", "Specialized Advice"),
    ("S7", "Privacy"),
    ("S8", "Intellectual Property"),
    ("S9", "Indiscriminate Weapons"),
    ("S10", "Hate"),
    ("S11", "Self-Harm"),
    ("S12", "Sexual Content"),
    ("S13", "Elections"),
    ("S14", "Code Interpreter Abuse"),
];

/// The name of a hazard category (`S1` → `Violent Crimes`).
pub fn hazard_name(code: &str) -> Option<&'static str> {
    HAZARDS.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// The dotted name of the key on line `line` (1-based) of a TOML text: its table header above
/// and its own key, e.g. `pack.version`; `toml` when the line holds no key.
fn field_at_line(src: &str, line: usize) -> String {
    let lines: Vec<&str> = src.lines().collect();
    let Some(text) = lines.get(line.saturating_sub(1)) else { return "toml".into() };
    if text.trim().starts_with('[') {
        return text.trim().trim_start_matches('[').trim_end_matches(']').trim().to_string();
    }
    let key = text.split_once('=').map(|(k, _)| k.trim().trim_matches('"').to_string()).filter(|k| !k.is_empty() && !k.starts_with('['));
    let table = lines[..line.saturating_sub(1)].iter().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[').then(|| l.trim_start_matches('[').trim_end_matches(']').trim().to_string())
    });
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => "toml".into(),
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

impl Pack {
    /// Parses and validates the TOML text of a pack; `file` names it in errors.
    pub fn parse(src: &str, file: &str) -> Result<Self, PackError> {
        let err = |offset: usize, field: &str, message: String| PackError {
            file: file.into(),
            line: line_of(src, offset),
            field: field.into(),
            message,
        };
        let raw: PackFile = toml::from_str(src).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(src, s.start));
            PackError { file: file.into(), line, field: field_at_line(src, line), message: e.message().to_string() }
        })?;
        let mut groups = Groups::builtin();
        for (name, members) in &raw.groups {
            groups.insert(name.clone(), members.iter().map(|m| m.get_ref().clone()).collect());
        }
        let check_code = |c: &Spanned<String>, field: &str| -> Result<String, PackError> {
            let v = c.get_ref();
            if is_country(v) || groups.contains(v) {
                Ok(v.clone())
            } else {
                Err(err(c.span().start, field, format!("{v:?} is neither an ISO 3166-1 alpha-2 country code nor a country group")))
            }
        };
        for (name, members) in &raw.groups {
            for m in members {
                check_code(m, &format!("groups.{name}"))?;
            }
        }
        for (id, langs) in &raw.messages {
            if !langs.contains_key("en") {
                return Err(err(
                    src.find(&format!("[messages.{id}]")).unwrap_or(0),
                    &format!("messages.{id}"),
                    "needs an `en` text".into(),
                ));
            }
        }
        let mut rules = Vec::new();
        for (i, r) in raw.rules.iter().enumerate() {
            let at = r.id.span().start;
            let field = |f: &str| format!("rules[{i}].{f}");
            let id = r.id.get_ref().clone();
            if rules.iter().any(|x: &Rule| x.id == id) {
                return Err(err(at, &field("id"), format!("duplicate rule id {id:?}")));
            }
            if let Some(m) = &r.message
                && !raw.messages.contains_key(m.get_ref())
            {
                return Err(err(m.span().start, &field("message"), format!("refers to a missing message {:?}", m.get_ref())));
            }
            let deny = r.deny_countries.iter().map(|c| check_code(c, &field("deny_countries"))).collect::<Result<Vec<_>, _>>()?;
            let allow = r.allow_countries.iter().map(|c| check_code(c, &field("allow_countries"))).collect::<Result<Vec<_>, _>>()?;
            let mut categories = Vec::new();
            for c in &r.categories {
                if !CATEGORIES.contains(&c.get_ref().as_str()) {
                    return Err(err(
                        c.span().start,
                        &field("categories"),
                        format!("unknown category {:?} (S1–S14 or debated)", c.get_ref()),
                    ));
                }
                categories.push(c.get_ref().clone());
            }
            match r.kind {
                RuleKind::Region => {
                    if r.feature.is_none() {
                        return Err(err(at, &field("feature"), "a region rule needs `feature` (text_chat or image_understanding)".into()));
                    }
                    if deny.is_empty() && allow.is_empty() && r.allow_languages.is_empty() {
                        return Err(err(
                            at,
                            &field("deny_countries"),
                            "a region rule needs deny_countries, allow_countries or allow_languages".into(),
                        ));
                    }
                    if r.message.is_none() {
                        return Err(err(at, &field("message"), "a region rule needs the message blocked users get".into()));
                    }
                }
                RuleKind::Moderation => {
                    if categories.is_empty() {
                        return Err(err(at, &field("categories"), "a moderation rule needs categories".into()));
                    }
                    match r.action {
                        None => {
                            return Err(err(
                                at,
                                &field("action"),
                                "a moderation rule needs an action (refuse, support, allow, balanced)".into(),
                            ));
                        }
                        Some(ModAction::Refuse | ModAction::Support) if r.message.is_none() => {
                            return Err(err(at, &field("message"), "refuse and support rules need a message".into()));
                        }
                        _ => {}
                    }
                }
                RuleKind::Mau => {
                    if raw.license.is_none() {
                        return Err(err(at, &field("kind"), "a mau rule needs the pack's [license] section".into()));
                    }
                    if r.message.is_none() {
                        return Err(err(at, &field("message"), "a mau rule needs a message".into()));
                    }
                }
            }
            rules.push(Rule {
                id,
                kind: r.kind,
                mode: r.mode,
                feature: r.feature,
                deny_countries: deny,
                allow_countries: allow,
                allow_languages: r.allow_languages.iter().map(|l| l.to_ascii_lowercase()).collect(),
                unknown_country: r.unknown_country.unwrap_or_default(),
                categories,
                action: r.action,
                message: r.message.as_ref().map(|m| m.get_ref().clone()),
            });
        }
        if let Some(l) = &raw.license {
            for c in &l.multimodal_denied_licensee_countries {
                if !is_country(c) && !groups.contains(c) {
                    return Err(err(
                        src.find("multimodal_denied_licensee_countries").unwrap_or(0),
                        "license.multimodal_denied_licensee_countries",
                        format!("{c:?} is not a country code or group"),
                    ));
                }
            }
        }
        Ok(Pack {
            meta: raw.pack,
            groups: raw.groups.into_iter().map(|(k, v)| (k, v.into_iter().map(Spanned::into_inner).collect())).collect(),
            messages: raw.messages,
            license: raw.license,
            moderation: raw.moderation,
            rules,
        })
    }

    /// The text of message `id` in `language` (or English).
    pub fn message(&self, id: &str, language: Option<&str>) -> Option<&str> {
        let m = self.messages.get(id)?;
        language.and_then(|l| m.get(l)).or_else(|| m.get("en")).map(String::as_str)
    }
}

#[cfg(test)]
mod field_tests {
    use super::field_at_line;

    #[test]
    fn a_toml_error_names_the_key_of_its_line() {
        let src = "[pack]\nname = \"x\"\nversion = \"two\"\n\n[[rules]]\nid = 3\n";
        assert_eq!(field_at_line(src, 3), "pack.version");
        assert_eq!(field_at_line(src, 6), "rules.id");
        assert_eq!(field_at_line(src, 1), "pack");
        assert_eq!(field_at_line(src, 99), "toml");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[pack]
name = "t"
version = 2

[messages.blocked]
en = "Not here."
fr = "Pas ici."

[[rules]]
id = "eu"
kind = "region"
feature = "text_chat"
deny_countries = ["EU"]
message = "blocked"
"#;

    #[test]
    fn a_good_pack_loads_and_picks_the_language() {
        let p = Pack::parse(GOOD, "t.toml").expect("valid");
        assert_eq!(p.meta.version, 2);
        assert_eq!(p.message("blocked", Some("fr")), Some("Pas ici."));
        assert_eq!(p.message("blocked", Some("de")), Some("Not here."));
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let e = Pack::parse(&GOOD.replace("\"EU\"", "\"XX\""), "t.toml").expect_err("bad code");
        assert_eq!((e.file.as_str(), e.line, e.field.as_str()), ("t.toml", 14, "rules[0].deny_countries"), "{e}");
        assert!(e.message.contains("\"XX\""), "{e}");
        let e = Pack::parse(&GOOD.replace("message = \"blocked\"", "message = \"gone\""), "t.toml").expect_err("missing message");
        assert_eq!((e.line, e.field.as_str()), (15, "rules[0].message"), "{e}");
        let e = Pack::parse(&GOOD.replace("feature = ", "featur = "), "t.toml").expect_err("unknown key");
        assert_eq!(e.line, 13, "{e}");
        assert!(e.message.contains("featur"), "{e}");
        let e = Pack::parse(&GOOD.replace("en = \"Not here.\"\n", ""), "t.toml").expect_err("no en");
        assert!(e.field.contains("messages.blocked"), "{e}");
    }
}
