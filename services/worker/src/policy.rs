//! The policy hook the worker calls before generation (input) and after (output), and its
//! implementation over herd's policy packs ([`PacksPolicy`]). [`AllowAll`] allows everything.

use herd_policies::{Action, OutputCheck, PolicySet, Subject, Tenant};
use herd_store::DecisionRecord;
use std::collections::HashMap;
use std::sync::Arc;

/// What the worker knows about a turn when it asks the policy.
#[derive(Clone, Debug)]
pub struct TurnContext<'a> {
    pub tenant_id: i64,
    pub platform: herd_core::Platform,
    pub sender: &'a str,
    pub text: &'a str,
    /// The message carries an image.
    pub has_image: bool,
    /// The tenant's monthly active users, and whether this user is new this month.
    pub monthly_active_users: Option<u64>,
    pub new_user: bool,
}

/// The input decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Generate as usual.
    Allow,
    /// Generate with this system prompt (balanced mode for debated topics).
    Guide { system_prompt: String },
    /// Do not generate; send this instead.
    Replace(String),
    /// Do not generate; send this the first time in a conversation, then nothing.
    ReplaceOnce(String),
    /// Send nothing.
    Block,
}

/// The output decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Send,
    /// Generate once more with this system prompt.
    Regenerate { system_prompt: String },
    /// Send this instead of the reply.
    Replace(String),
}

/// Input check before generation, output check after; both return what to record.
pub trait PolicyHook: Send + Sync {
    fn check_input(&self, ctx: &TurnContext<'_>) -> (Decision, Vec<DecisionRecord>);
    fn check_output(&self, ctx: &TurnContext<'_>, input: &Decision, reply: &str, attempt: u32) -> (Output, Vec<DecisionRecord>);
}

/// Allows everything, records nothing.
pub struct AllowAll;

impl PolicyHook for AllowAll {
    fn check_input(&self, _: &TurnContext<'_>) -> (Decision, Vec<DecisionRecord>) {
        (Decision::Allow, vec![])
    }
    fn check_output(&self, _: &TurnContext<'_>, _: &Decision, _: &str, _: u32) -> (Output, Vec<DecisionRecord>) {
        (Output::Send, vec![])
    }
}

/// The policy packs, per tenant.
pub struct PacksPolicy {
    set: Arc<PolicySet>,
    tenants: HashMap<i64, Tenant>,
}

/// A tenant's policy settings from the settings file.
pub fn tenant_policy(t: &herd_core::settings::TenantSeed) -> Result<Tenant, String> {
    use herd_policies::tenant::Override;
    let mut overrides = std::collections::BTreeMap::new();
    for (k, v) in &t.overrides {
        let o = match v.as_str() {
            "enforce" => Override::Enforce,
            "shadow" => Override::Shadow,
            "off" => Override::Off,
            other => return Err(format!("tenant {}: override {k:?} must be enforce, shadow or off, got {other:?}", t.name)),
        };
        overrides.insert(k.clone(), o);
    }
    if !herd_policies::region::is_country(&t.principal_place_of_business) {
        return Err(format!("tenant {}: principal_place_of_business {:?} is not an ISO country code", t.name, t.principal_place_of_business));
    }
    Ok(Tenant {
        name: t.name.clone(),
        principal_place_of_business: t.principal_place_of_business.clone(),
        default_country: t.default_country.clone(),
        packs: t.packs.clone(),
        meta_license_granted: t.meta_license_granted,
        multimodal: t.multimodal,
        overrides,
    })
}

impl PacksPolicy {
    /// The settings' tenants (matched to their ids by name) over `set`.
    pub fn from_settings(set: Arc<PolicySet>, tenants: &[herd_core::settings::TenantSeed], ids: &[(i64, String)]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for t in tenants {
            if let Some((id, _)) = ids.iter().find(|(_, n)| *n == t.name) {
                map.insert(*id, tenant_policy(t)?);
            }
        }
        Self::new(set, map)
    }

    /// `tenants` maps tenant ids to their policy settings (checked against the packs).
    pub fn new(set: Arc<PolicySet>, tenants: HashMap<i64, Tenant>) -> Result<Self, String> {
        for t in tenants.values() {
            set.check_tenant(t)?;
            if t.multimodal {
                set.may_activate_multimodal(t)?;
            }
        }
        Ok(Self { set, tenants })
    }

    fn subject<'a>(ctx: &'a TurnContext<'a>) -> Subject<'a> {
        Subject {
            text: ctx.text,
            phone: (ctx.platform == herd_core::Platform::Whatsapp && ctx.sender.chars().all(|c| c.is_ascii_digit())).then_some(ctx.sender),
            platform: Some(ctx.platform.as_str()),
            locale: None,
            has_image: ctx.has_image,
            monthly_active_users: ctx.monthly_active_users,
            new_user: ctx.new_user,
        }
    }
}

fn records(stage: &'static str, d: &herd_policies::Decision) -> Vec<DecisionRecord> {
    d.hits
        .iter()
        .map(|h| DecisionRecord {
            stage,
            pack: h.pack.clone(),
            pack_version: h.version as i32,
            rule: h.rule.clone(),
            category: h.category.clone(),
            action: h.action.as_str().to_string(),
            shadow: h.shadow,
            country: d.country.clone(),
            classifier: d.classifier.clone(),
        })
        .collect()
}

impl PolicyHook for PacksPolicy {
    fn check_input(&self, ctx: &TurnContext<'_>) -> (Decision, Vec<DecisionRecord>) {
        let Some(tenant) = self.tenants.get(&ctx.tenant_id) else { return (Decision::Allow, vec![]) };
        let d = self.set.evaluate(tenant, &Self::subject(ctx));
        let msg = d.message.clone().unwrap_or_default();
        let decision = match d.action {
            Action::Allow => Decision::Allow,
            Action::Balanced => d.system_prompt.clone().map_or(Decision::Allow, |p| Decision::Guide { system_prompt: p }),
            Action::Refuse | Action::Support | Action::BlockedFeature => Decision::Replace(msg),
            Action::BlockedRegion | Action::BlockedLicense => Decision::ReplaceOnce(msg),
        };
        (decision, records("input", &d))
    }

    fn check_output(&self, ctx: &TurnContext<'_>, input: &Decision, reply: &str, attempt: u32) -> (Output, Vec<DecisionRecord>) {
        let Some(tenant) = self.tenants.get(&ctx.tenant_id) else { return (Output::Send, vec![]) };
        let balanced = match input {
            Decision::Guide { system_prompt } => Some(system_prompt.as_str()),
            _ => None,
        };
        match self.set.check_output(tenant, balanced, reply, attempt) {
            OutputCheck::Send => (Output::Send, vec![]),
            OutputCheck::Regenerate { system_prompt, reason, pack, version } => {
                let rec = DecisionRecord {
                    stage: "output",
                    pack,
                    pack_version: version as i32,
                    rule: format!("regenerate: {reason}"),
                    category: Some("debated".into()),
                    action: "regenerate".into(),
                    shadow: false,
                    country: Self::subject(ctx).phone.and_then(herd_policies::region::country_of_phone),
                    classifier: self.set.classifier().name().to_string(),
                };
                (Output::Regenerate { system_prompt }, vec![rec])
            }
            OutputCheck::Replace { message, decision } => (Output::Replace(message), records("output", &decision)),
        }
    }
}
