//! Evaluation: one message (and who sent it) against a tenant's packs → one decision.

use crate::classify::{Classification, Classifier};
use crate::pack::{Feature, ModAction, Mode, Pack, PackError, Rule, RuleKind, Unknown};
use crate::region::{Groups, country_of_locale, country_of_phone, language_of_locale};
use crate::tenant::{Moderation, Override, Tenant};
use serde::Serialize;
use std::collections::BTreeMap;

/// What to do with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    /// Answer a debated topic with balanced perspectives.
    Balanced,
    /// Send the category's message; generate nothing.
    Refuse,
    /// The feature the message needs (image understanding) is not available to this user.
    BlockedFeature,
    /// The service is not available in the user's region.
    BlockedRegion,
    /// The tenant is above the MAU threshold without Meta's license: new users are not served.
    BlockedLicense,
    /// Self-harm: a caring reply with crisis resources. It is a fixed text, not a generation, so
    /// it is sent even where the model may not serve the user (a person in crisis is never met
    /// with "not available").
    Support,
}

impl Action {
    /// The stable name (`allow`, `balanced`, `refuse`, `support`, `blocked_region`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Balanced => "balanced",
            Action::Refuse => "refuse",
            Action::Support => "support",
            Action::BlockedFeature => "blocked_feature",
            Action::BlockedRegion => "blocked_region",
            Action::BlockedLicense => "blocked_license",
        }
    }

    /// Whether nothing is generated (the pack's message is sent instead).
    pub fn blocks_generation(self) -> bool {
        !matches!(self, Action::Allow | Action::Balanced)
    }
}

/// One rule that matched (acting, or in shadow mode only recorded).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleHit {
    pub pack: String,
    pub version: u32,
    pub rule: String,
    pub category: Option<String>,
    pub action: Action,
    pub shadow: bool,
}

/// The decision about one message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub action: Action,
    /// Hazard categories the classifier found (S1–S14).
    pub categories: Vec<String>,
    pub country: Option<String>,
    pub eu: Option<bool>,
    /// `pack/rule-id` of every enforced rule that matched.
    pub rules: Vec<String>,
    /// Every matching rule, shadow ones included (for the audit trail).
    pub hits: Vec<RuleHit>,
    /// The text to send instead of generating (refuse, support, blocks), in the user's language.
    pub message: Option<String>,
    /// The system prompt of balanced mode.
    pub system_prompt: Option<String>,
    /// Name of the classifier that ran.
    pub classifier: String,
}

/// Who sent what.
#[derive(Clone, Debug, Default)]
pub struct Subject<'a> {
    pub text: &'a str,
    /// E.164 number (WhatsApp).
    pub phone: Option<&'a str>,
    pub platform: Option<&'a str>,
    /// Declared locale (`fr_FR`).
    pub locale: Option<&'a str>,
    pub has_image: bool,
    /// The tenant's monthly active users so far, when known.
    pub monthly_active_users: Option<u64>,
    /// First message of this user this month.
    pub new_user: bool,
    /// `text` is the assistant's reply to this user message (the output check).
    pub reply_to: Option<&'a str>,
}

/// The main language of a country, for messages to users without a declared locale.
fn main_language(country: &str) -> Option<&'static str> {
    Some(match country {
        "FR" | "BE" | "LU" | "MC" | "GP" | "GF" | "MQ" | "RE" | "YT" | "MF" | "SN" | "CI" => "fr",
        "ES" | "MX" | "AR" | "CO" | "CL" | "PE" | "VE" | "EC" | "GT" | "CU" | "BO" | "DO" | "HN" | "PY" | "SV" | "NI" | "CR" | "PA"
        | "UY" => "es",
        "DE" | "AT" | "LI" => "de",
        "IT" | "SM" | "VA" => "it",
        "PT" | "BR" | "AO" | "MZ" => "pt",
        "NL" | "SR" => "nl",
        "PL" => "pl",
        "US" | "GB" | "IE" | "AU" | "NZ" | "CA" | "JM" | "NG" | "GH" | "KE" | "ZA" | "GG" | "JE" | "IM" => "en",
        _ => return None,
    })
}

/// What to do with a generated reply.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputCheck {
    Send,
    /// Generate once more with this system prompt (a balanced answer lectured or took one side);
    /// `pack` and `version` name the pack whose moderation texts asked for it.
    Regenerate {
        system_prompt: String,
        reason: String,
        pack: String,
        version: u32,
    },
    /// Do not send the reply; send this instead. `decision` is the reply's own, for the audit trail.
    Replace {
        message: String,
        decision: Box<Decision>,
    },
}

/// The packs herd ships (`policies/packs/*.toml`).
pub const SHIPPED_PACKS: [(&str, &str); 3] = [
    ("llama4-license.toml", include_str!("../packs/llama4-license.toml")),
    ("meta-ai-rollout.toml", include_str!("../packs/meta-ai-rollout.toml")),
    ("balanced-moderation.toml", include_str!("../packs/balanced-moderation.toml")),
];

/// Loaded packs, the built-in classifier and, when one is loaded, the guard model.
pub struct PolicySet {
    packs: BTreeMap<String, Pack>,
    groups: Groups,
    classifier: Box<dyn Classifier>,
    guard: Option<Box<dyn Classifier>>,
}

impl PolicySet {
    /// Packs from `(file name, TOML text)` pairs, with the built-in classifier (the shipped
    /// learned model beside the rules).
    pub fn from_sources<'a>(sources: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, PackError> {
        let mut packs = BTreeMap::new();
        let mut groups = Groups::builtin();
        for (file, src) in sources {
            let p = Pack::parse(src, file)?;
            for (g, members) in &p.groups {
                groups.insert(g.clone(), members.clone());
            }
            packs.insert(p.meta.name.clone(), p);
        }
        Ok(Self { packs, groups, classifier: Box::new(crate::learned::LearnedClassifier::shared()), guard: None })
    }

    /// The shipped packs.
    pub fn shipped() -> Self {
        Self::from_sources(SHIPPED_PACKS).expect("the shipped packs are valid (tested)")
    }

    /// Every `*.toml` in `dir`.
    pub fn load_dir(dir: &std::path::Path) -> Result<Self, PackError> {
        let io = |e: std::io::Error| PackError { file: dir.display().to_string(), line: 0, field: "-".into(), message: e.to_string() };
        let mut files: Vec<(String, String)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).map_err(io)?;
                files.push((path.display().to_string(), text));
            }
        }
        files.sort();
        Self::from_sources(files.iter().map(|(f, t)| (f.as_str(), t.as_str())))
    }

    /// Replaces the built-in classifier (`herd policy bench` compares several).
    pub fn with_classifier(mut self, c: Box<dyn Classifier>) -> Self {
        self.classifier = c;
        self
    }

    /// Adds the guard model (Llama Guard through herd's engine): tenants choose how it is used
    /// (`Tenant::moderation`); those that do not say use it instead of the built-in classifier.
    pub fn with_guard(mut self, g: Box<dyn Classifier>) -> Self {
        self.guard = Some(g);
        self
    }

    /// Classifies `text` the way `tenant` asked; returns what was found and which classifier(s)
    /// decided.
    /// A reply (`reply_to` set) is read as one, by the classifiers that tell replies apart.
    fn classify_for(&self, tenant: &Tenant, text: &str, reply_to: Option<&str>) -> (Classification, String) {
        let mode = tenant.moderation.unwrap_or(if self.guard.is_some() { Moderation::Guard } else { Moderation::Builtin });
        let run = |c: &dyn Classifier| match reply_to {
            Some(prompt) => c.classify_reply(prompt, text),
            None => c.classify(text),
        };
        match (mode, self.guard.as_deref()) {
            (Moderation::Guard, Some(g)) => (run(g), g.name().to_string()),
            (Moderation::BuiltinThenGuard, Some(g)) => {
                let first = run(self.classifier.as_ref());
                if !first.categories.is_empty() {
                    return (first, self.classifier.name().to_string());
                }
                let second = run(g);
                let name = format!("{} then {}", self.classifier.name(), g.name());
                // The guard has no balanced mode and does not tell languages: those stay the built-in's.
                let debated = first.debated && second.categories.is_empty();
                (Classification { categories: second.categories, debated, language: first.language }, name)
            }
            // Builtin, or a mode needing a guard that is not loaded (refused by `check_tenant`).
            _ => (run(self.classifier.as_ref()), self.classifier.name().to_string()),
        }
    }

    /// The classifier in use.
    pub fn classifier(&self) -> &dyn Classifier {
        self.classifier.as_ref()
    }

    /// A pack by name.
    pub fn pack(&self, name: &str) -> Option<&Pack> {
        self.packs.get(name)
    }

    /// Checks that `tenant` names only loaded packs and existing rules.
    pub fn check_tenant(&self, tenant: &Tenant) -> Result<(), String> {
        for p in &tenant.packs {
            if !self.packs.contains_key(p) {
                return Err(format!("tenant {}: pack {p:?} is not loaded", tenant.name));
            }
        }
        for key in tenant.overrides.keys() {
            let ok = key.split_once('/').is_some_and(|(p, r)| self.packs.get(p).is_some_and(|pk| pk.rules.iter().any(|x| x.id == r)));
            if !ok {
                return Err(format!("tenant {}: override {key:?} names no rule (expected \"pack/rule-id\")", tenant.name));
            }
        }
        if let Some(m) = tenant.moderation.filter(|m| m.needs_guard() && self.guard.is_none()) {
            return Err(format!(
                "tenant {}: moderation {:?} needs a guard model, and policies.guard_model is not set",
                tenant.name,
                m.as_str()
            ));
        }
        Ok(())
    }

    /// Whether the tenant (the licensee) may activate a multimodal Llama 4 model.
    pub fn may_activate_multimodal(&self, tenant: &Tenant) -> Result<(), String> {
        for p in tenant.packs.iter().filter_map(|n| self.packs.get(n)) {
            if let Some(l) = &p.license {
                let denied = l
                    .multimodal_denied_licensee_countries
                    .iter()
                    .any(|g| self.groups.expand(g).contains(&tenant.principal_place_of_business));
                if denied {
                    return Err(format!(
                        "tenant {}: a licensee with its principal place of business in {} may not use the multimodal Llama 4 models ({} v{})",
                        tenant.name, tenant.principal_place_of_business, p.meta.name, p.meta.version
                    ));
                }
            }
        }
        Ok(())
    }

    /// The attribution the tenant's product must show, if a pack requires one.
    pub fn attribution(&self, tenant: &Tenant) -> Option<&str> {
        tenant.packs.iter().filter_map(|n| self.packs.get(n)).find_map(|p| p.license.as_ref().map(|l| l.attribution.as_str()))
    }

    /// Decides about one message.
    pub fn evaluate(&self, tenant: &Tenant, s: &Subject<'_>) -> Decision {
        let country =
            s.phone.and_then(country_of_phone).or_else(|| s.locale.and_then(country_of_locale)).or_else(|| tenant.default_country.clone());
        // Rules on languages read the declared locale only.
        // Messages go out in the language the user wrote in when the classifier can tell, else the
        // declared one, else the main language of the user's country.
        let declared = s.locale.and_then(language_of_locale);
        let eu = country.as_ref().map(|c| self.groups.is_eu(c));
        let (classification, classifier) = self.classify_for(tenant, s.text, s.reply_to);
        let language = classification
            .language
            .map(str::to_string)
            .or_else(|| declared.clone())
            .or_else(|| country.as_deref().and_then(main_language).map(str::to_string));
        let mut hits: Vec<(RuleHit, Option<&str>, &Pack)> = Vec::new();
        for pack in tenant.packs.iter().filter_map(|n| self.packs.get(n)) {
            for rule in &pack.rules {
                let shadow = match tenant.overrides.get(&format!("{}/{}", pack.meta.name, rule.id)) {
                    Some(Override::Off) => continue,
                    Some(Override::Shadow) => true,
                    Some(Override::Enforce) => false,
                    None => rule.mode == Mode::Shadow,
                };
                let hit = |action: Action, category: Option<String>| RuleHit {
                    pack: pack.meta.name.clone(),
                    version: pack.meta.version,
                    rule: rule.id.clone(),
                    category,
                    action,
                    shadow,
                };
                match rule.kind {
                    RuleKind::Mau => {
                        let threshold = pack.license.as_ref().map_or(u64::MAX, |l| l.mau_threshold);
                        if s.new_user && !tenant.meta_license_granted && s.monthly_active_users.is_some_and(|m| m > threshold) {
                            hits.push((hit(Action::BlockedLicense, None), rule.message.as_deref(), pack));
                        }
                    }
                    RuleKind::Region => {
                        let applies = match rule.feature {
                            Some(Feature::TextChat) | None => true,
                            Some(Feature::ImageUnderstanding) => s.has_image,
                        };
                        if applies && self.region_blocks(rule, country.as_deref(), declared.as_deref()) {
                            let action = if rule.feature == Some(Feature::ImageUnderstanding) {
                                Action::BlockedFeature
                            } else {
                                Action::BlockedRegion
                            };
                            hits.push((hit(action, None), rule.message.as_deref(), pack));
                        }
                    }
                    RuleKind::Moderation => {
                        let found = rule.categories.iter().filter(|c| {
                            (c.as_str() == "debated" && classification.debated) || classification.categories.contains(&c.as_str())
                        });
                        for c in found {
                            let action = match rule.action {
                                Some(ModAction::Refuse) => Action::Refuse,
                                Some(ModAction::Support) => Action::Support,
                                Some(ModAction::Balanced) => Action::Balanced,
                                Some(ModAction::Allow) | None => Action::Allow,
                            };
                            hits.push((hit(action, Some(c.clone())), rule.message.as_deref(), pack));
                        }
                    }
                }
            }
        }
        // The strongest enforced action wins; its rule's message and pack's prompt go with it.
        let acting = hits.iter().filter(|(h, _, _)| !h.shadow).max_by_key(|(h, _, _)| h.action);
        let action = acting.map_or(Action::Allow, |(h, _, _)| h.action);
        let message = acting.and_then(|(_, m, p)| m.and_then(|m| p.message(m, language.as_deref()))).map(str::to_string);
        let system_prompt = (action == Action::Balanced)
            .then(|| acting.and_then(|(_, _, p)| p.moderation.as_ref()).map(|m| m.balanced_system_prompt.clone()))
            .flatten();
        Decision {
            action,
            categories: classification.categories.iter().map(|c| c.to_string()).collect(),
            country,
            eu,
            rules: hits
                .iter()
                .filter(|(h, _, _)| !h.shadow && h.action != Action::Allow)
                .map(|(h, _, _)| format!("{}/{}", h.pack, h.rule))
                .collect(),
            hits: hits.into_iter().map(|(h, _, _)| h).collect(),
            message,
            system_prompt,
            classifier,
        }
    }

    fn region_blocks(&self, rule: &Rule, country: Option<&str>, language: Option<&str>) -> bool {
        let has_country_terms = !rule.deny_countries.is_empty() || !rule.allow_countries.is_empty();
        let by_country = match country {
            None => has_country_terms && rule.unknown_country == Unknown::Block,
            Some(c) => {
                rule.deny_countries.iter().any(|g| self.groups.expand(g).contains(c))
                    || (!rule.allow_countries.is_empty() && !rule.allow_countries.iter().any(|g| self.groups.expand(g).contains(c)))
            }
        };
        let by_language = !rule.allow_languages.is_empty() && !language.is_some_and(|l| rule.allow_languages.iter().any(|a| a == l));
        by_country || by_language
    }

    /// Looks at a generated reply: unsafe content is replaced by the category's message; a
    /// balanced answer (`balanced` holds the system prompt it was made with) that lectures or shows
    /// one side is regenerated once (`attempt` 0 → may regenerate, 1 → send as is).
    /// `prompt` is the user message the reply answers.
    pub fn check_output(&self, tenant: &Tenant, balanced: Option<&str>, prompt: &str, reply: &str, attempt: u32) -> OutputCheck {
        let mut on_reply = self.evaluate(tenant, &Subject { text: reply, reply_to: Some(prompt), ..Default::default() });
        on_reply.hits.retain(|h| h.category.is_some());
        if on_reply.action == Action::Refuse {
            return OutputCheck::Replace { message: on_reply.message.clone().unwrap_or_default(), decision: Box::new(on_reply) };
        }
        let Some(base) = balanced.filter(|_| attempt == 0) else { return OutputCheck::Send };
        let Some((pack, m)) = tenant.packs.iter().filter_map(|n| self.packs.get(n)).find_map(|p| p.moderation.as_ref().map(|m| (p, m)))
        else {
            return OutputCheck::Send;
        };
        let lower = reply.to_lowercase();
        let lecture = m.lecturing_phrases.iter().find(|p| lower.contains(&p.to_lowercase()));
        let sides = [
            "some ",
            "others",
            "on the other hand",
            "supporters",
            "critics",
            "proponents",
            "opponents",
            "argue",
            "while ",
            "however",
            "perspective",
            "view",
        ];
        let one_sided = reply.split_whitespace().count() > 25 && sides.iter().filter(|s| lower.contains(*s)).count() < 2;
        let reason = match (lecture, one_sided) {
            (Some(p), _) => format!("lecturing phrase {p:?}"),
            (None, true) => "one perspective only".to_string(),
            (None, false) => return OutputCheck::Send,
        };
        OutputCheck::Regenerate {
            system_prompt: format!("{base}\n\n{}", m.stronger_instruction),
            reason,
            pack: pack.meta.name.clone(),
            version: pack.meta.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::Override;

    fn eval(set: &PolicySet, t: &Tenant, s: Subject<'_>) -> Decision {
        set.evaluate(t, &s)
    }

    #[test]
    fn the_shipped_packs_load_and_the_demo_tenant_is_valid() {
        let set = PolicySet::shipped();
        set.check_tenant(&Tenant::demo()).expect("valid");
        assert_eq!(set.attribution(&Tenant::demo()), Some("Built with Llama"));
    }

    #[test]
    fn an_eu_licensee_cannot_activate_a_multimodal_model() {
        let set = PolicySet::shipped();
        let t = Tenant { principal_place_of_business: "DE".into(), multimodal: true, ..Tenant::demo() };
        let e = set.may_activate_multimodal(&t).expect_err("EU licensee");
        assert!(e.contains("DE") && e.contains("multimodal"), "{e}");
        assert!(set.may_activate_multimodal(&Tenant::demo()).is_ok());
    }

    #[test]
    fn above_the_mau_threshold_new_users_need_metas_license() {
        let set = PolicySet::shipped();
        let t = Tenant::demo();
        let over = Subject {
            text: "Hello",
            phone: Some("+14155550123"),
            monthly_active_users: Some(700_000_001),
            new_user: true,
            ..Default::default()
        };
        assert_eq!(eval(&set, &t, over.clone()).action, Action::BlockedLicense);
        assert_eq!(eval(&set, &t, Subject { new_user: false, ..over.clone() }).action, Action::Allow, "existing users stay");
        let licensed = Tenant { meta_license_granted: true, ..Tenant::demo() };
        assert_eq!(eval(&set, &licensed, over.clone()).action, Action::Allow);
        assert_eq!(eval(&set, &t, Subject { monthly_active_users: Some(699_999_999), ..over }).action, Action::Allow);
    }

    #[test]
    fn end_users_are_placed_by_phone_then_locale_then_tenant_default() {
        let set = PolicySet::shipped();
        let t = Tenant::demo();
        let d = eval(&set, &t, Subject { text: "Hi", phone: Some("+33612345678"), ..Default::default() });
        assert_eq!((d.action, d.country.as_deref(), d.eu), (Action::BlockedRegion, Some("FR"), Some(true)));
        assert_eq!(
            d.message.as_deref(),
            Some("Désolé — cet assistant n'est pas encore disponible dans votre pays."),
            "French by the country"
        );
        let d = eval(&set, &t, Subject { text: "Hi", phone: Some("+33612345678"), locale: Some("en_GB"), ..Default::default() });
        assert_eq!(d.message.as_deref(), Some("Sorry — this assistant is not available in your country yet."), "the declared locale wins");
        let d = eval(&set, &t, Subject { text: "Hi", locale: Some("fr_FR"), ..Default::default() });
        assert_eq!(d.message.as_deref(), Some("Désolé — cet assistant n'est pas encore disponible dans votre pays."));
        let d = eval(&set, &t, Subject { text: "Hi", platform: Some("messenger"), ..Default::default() });
        assert_eq!((d.action, d.country), (Action::Allow, None), "unknown country: the pack's rule says allow");
        let t2 = Tenant { default_country: Some("IT".into()), ..Tenant::demo() };
        assert_eq!(eval(&set, &t2, Subject { text: "Hi", ..Default::default() }).action, Action::BlockedRegion);
        // Guadeloupe is in the EU; Jersey is not.
        assert_eq!(eval(&set, &t, Subject { text: "Hi", phone: Some("+590690123456"), ..Default::default() }).eu, Some(true));
        assert_eq!(eval(&set, &t, Subject { text: "Hi", phone: Some("+447797123456"), ..Default::default() }).action, Action::Allow);
    }

    #[test]
    fn images_are_for_us_users_with_an_english_locale_only() {
        let set = PolicySet::shipped();
        let t = Tenant::demo();
        let us_en =
            Subject { text: "what is this?", phone: Some("+14155550123"), locale: Some("en_US"), has_image: true, ..Default::default() };
        assert_eq!(eval(&set, &t, us_en.clone()).action, Action::Allow);
        assert_eq!(eval(&set, &t, Subject { locale: Some("es_US"), ..us_en.clone() }).action, Action::BlockedFeature);
        assert_eq!(eval(&set, &t, Subject { phone: Some("+447700900123"), locale: Some("en_GB"), ..us_en }).action, Action::BlockedFeature);
    }

    #[test]
    fn unknown_countries_follow_the_rule_and_overrides_switch_rules() {
        let pack = r#"
[pack]
name = "strict"
version = 1
[messages.no]
en = "No."
[[rules]]
id = "only-ca"
kind = "region"
feature = "text_chat"
allow_countries = ["CA"]
unknown_country = "block"
message = "no"
"#;
        let set = PolicySet::from_sources([("strict.toml", pack)]).expect("valid");
        let mut t = Tenant { packs: vec!["strict".into()], ..Tenant::demo() };
        assert_eq!(eval(&set, &t, Subject { text: "hi", ..Default::default() }).action, Action::BlockedRegion);
        t.overrides.insert("strict/only-ca".into(), Override::Shadow);
        let d = eval(&set, &t, Subject { text: "hi", ..Default::default() });
        assert_eq!(d.action, Action::Allow);
        assert!(d.hits.iter().any(|h| h.shadow && h.rule == "only-ca"));
        t.overrides.insert("strict/only-ca".into(), Override::Off);
        assert!(eval(&set, &t, Subject { text: "hi", ..Default::default() }).hits.is_empty());
        t.overrides.insert("strict/nope".into(), Override::Off);
        assert!(set.check_tenant(&t).is_err());
    }

    #[test]
    fn a_lecturing_balanced_answer_is_regenerated_once() {
        let set = PolicySet::shipped();
        let t = Tenant::demo();
        let d =
            eval(&set, &t, Subject { text: "Should the death penalty be abolished?", phone: Some("+14155550123"), ..Default::default() });
        assert_eq!(d.action, Action::Balanced);
        assert!(d.system_prompt.as_deref().is_some_and(|p| p.contains("main perspectives")));
        let lecture = "It's important to remember that every life matters, and I encourage you to reflect.";
        let balanced = d.system_prompt.as_deref();
        assert!(matches!(
            set.check_output(&t, balanced, "Should the death penalty be abolished?", lecture, 0),
            OutputCheck::Regenerate { .. }
        ));
        assert_eq!(set.check_output(&t, balanced, "Should the death penalty be abolished?", lecture, 1), OutputCheck::Send);
        let fair = "Supporters argue it deters crime and delivers justice, while critics say it risks executing innocent people; others point to its cost.";
        assert_eq!(set.check_output(&t, balanced, "Should the death penalty be abolished?", fair, 0), OutputCheck::Send);
    }

    /// A stand-in guard model for the combination logic: flags `zebra` as S1 and counts calls.
    struct ZebraGuard(std::sync::atomic::AtomicUsize);

    impl Classifier for ZebraGuard {
        fn name(&self) -> &str {
            "zebra-guard"
        }
        fn classify(&self, text: &str) -> Classification {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Classification { categories: if text.contains("zebra") { vec!["S1"] } else { vec![] }, ..Default::default() }
        }
        /// A reply is unsafe when it agrees to a request about zebras.
        fn classify_reply(&self, prompt: &str, reply: &str) -> Classification {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let agrees = prompt.contains("zebra") && reply.starts_with("Sure");
            Classification { categories: if agrees { vec!["S1"] } else { vec![] }, ..Default::default() }
        }
    }

    #[test]
    fn the_output_check_reads_the_reply_with_the_message_it_answers() {
        let set = PolicySet::shipped().with_guard(Box::new(ZebraGuard(Default::default())));
        let t = Tenant { moderation: Some(Moderation::Guard), ..Tenant::demo() };
        let check = |prompt, reply| set.check_output(&t, None, prompt, reply, 0);
        assert!(matches!(check("how do I hurt a zebra", "Sure, first you"), OutputCheck::Replace { .. }));
        assert_eq!(check("how do I feed a zebra", "Zebras eat grass."), OutputCheck::Send);
        assert_eq!(check("how do I bake bread", "Sure, first you knead it."), OutputCheck::Send);
    }

    #[test]
    fn each_tenant_chooses_how_the_guard_model_is_used() {
        let guard = std::sync::Arc::new(ZebraGuard(Default::default()));
        let set = PolicySet::shipped().with_guard(Box::new(guard.clone()));
        let calls = || guard.0.load(std::sync::atomic::Ordering::SeqCst);
        let with = |m: Option<Moderation>| Tenant { moderation: m, ..Tenant::demo() };
        let us = |text| Subject { text, phone: Some("+14155550123"), ..Default::default() };
        let bomb = "how do I build a pipe bomb to blow up my school";
        let zebra = "what time does the zebra enclosure open at the city zoo";

        // unset with a guard loaded: the guard alone (as before tenants could choose)
        let d = eval(&set, &with(None), us(zebra));
        assert_eq!((d.action, d.classifier.as_str()), (Action::Refuse, "zebra-guard"));
        // builtin: the guard is not asked
        let before = calls();
        let d = eval(&set, &with(Some(Moderation::Builtin)), us(zebra));
        assert_eq!((d.action, calls()), (Action::Allow, before));
        assert_eq!(eval(&set, &with(Some(Moderation::Builtin)), us(bomb)).action, Action::Refuse);
        // builtin then guard: what the built-in flags is decided without the guard...
        let before = calls();
        let d = eval(&set, &with(Some(Moderation::BuiltinThenGuard)), us(bomb));
        assert_eq!((d.action, calls()), (Action::Refuse, before));
        assert_eq!(d.classifier, "ngram+rules");
        // ...and the guard sees what it lets through
        let d = eval(&set, &with(Some(Moderation::BuiltinThenGuard)), us(zebra));
        assert_eq!((d.action, d.classifier.as_str()), (Action::Refuse, "ngram+rules then zebra-guard"));
        assert_eq!(calls(), before + 1);
        // balanced mode stays the built-in's: the guard has none
        let d = eval(&set, &with(Some(Moderation::BuiltinThenGuard)), us("Should the death penalty be abolished?"));
        assert_eq!(d.action, Action::Balanced);
    }

    #[test]
    fn a_mode_that_needs_the_guard_is_refused_without_one() {
        let set = PolicySet::shipped();
        for m in [Moderation::Guard, Moderation::BuiltinThenGuard] {
            let err = set.check_tenant(&Tenant { moderation: Some(m), ..Tenant::demo() }).expect_err("no guard model");
            assert!(err.contains("policies.guard_model") && err.contains(m.as_str()), "{err}");
        }
        assert!(set.check_tenant(&Tenant { moderation: Some(Moderation::Builtin), ..Tenant::demo() }).is_ok());
        let err = Tenant::from_parts("t", "US", None, &[], &Default::default(), false, false, Some("llama")).expect_err("bad mode");
        assert_eq!(err.0, "moderation");
    }

    #[test]
    fn the_moderation_modes_are_the_ones_the_database_allows() {
        let sql = include_str!("../../migrations/20261204000006_tenant_moderation.sql");
        let allowed: Vec<&str> = sql
            .split("IN (")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .expect("a CHECK list")
            .split(',')
            .map(|v| v.trim().trim_matches('\''))
            .collect();
        assert_eq!(allowed, Moderation::ALL.map(Moderation::as_str));
    }
}
