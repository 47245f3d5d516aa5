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
    Regenerate {
        system_prompt: String,
    },
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
    Tenant::from_parts(
        &t.name,
        &t.principal_place_of_business,
        t.default_country.as_deref(),
        &t.packs,
        &t.overrides,
        t.meta_license_granted,
        t.multimodal,
        t.moderation.as_deref(),
    )
    .map_err(|(field, e)| format!("tenant {}: {field}: {e}", t.name))
}

/// A tenant's policy settings as stored.
pub fn stored_tenant_policy(t: &herd_store::admin::TenantRow) -> Result<Tenant, (String, String)> {
    Tenant::from_parts(
        &t.name,
        &t.principal_place_of_business,
        t.default_country.as_deref(),
        &t.packs,
        &t.overrides,
        t.meta_license_granted,
        t.multimodal,
        t.moderation.as_deref(),
    )
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
            reply_to: None,
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
        match self.set.check_output(tenant, balanced, ctx.text, reply, attempt) {
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

/// The policy as stored in PostgreSQL: the active version of every pack and each tenant's
/// settings, rebuilt when an activation or a tenant changes (see [`StorePolicy::watch`]). A change
/// that does not build (a tenant naming a pack that is gone) is logged and the running policy kept.
pub struct StorePolicy {
    current: std::sync::RwLock<Arc<PacksPolicy>>,
    generation: std::sync::Mutex<String>,
    classifier: Option<Arc<dyn herd_policies::Classifier>>,
}

impl StorePolicy {
    /// Builds the policy from the store; `classifier` replaces the built-in one (Llama Guard).
    pub async fn load(store: &herd_store::Store, classifier: Option<Arc<dyn herd_policies::Classifier>>) -> Result<Arc<Self>, String> {
        let generation = store.policy_generation().await.map_err(|e| e.to_string())?;
        let policy = Self::build(store, classifier.as_ref()).await?;
        Ok(Arc::new(Self { current: std::sync::RwLock::new(Arc::new(policy)), generation: std::sync::Mutex::new(generation), classifier }))
    }

    /// `(name, version, TOML)` of the packs of `dir`, or of the shipped ones.
    pub fn pack_sources(dir: Option<&std::path::Path>) -> Result<Vec<(String, u32, String)>, String> {
        let files: Vec<(String, String)> = match dir {
            Some(d) => {
                let mut files = vec![];
                let entries = std::fs::read_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
                for entry in entries {
                    let path = entry.map_err(|e| format!("{}: {e}", d.display()))?.path();
                    if path.extension().is_some_and(|e| e == "toml") {
                        files.push((
                            path.display().to_string(),
                            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?,
                        ));
                    }
                }
                files.sort();
                files
            }
            None => herd_policies::decide::SHIPPED_PACKS.iter().map(|(f, s)| (f.to_string(), s.to_string())).collect(),
        };
        files
            .into_iter()
            .map(|(f, src)| {
                let p = herd_policies::Pack::parse(&src, &f).map_err(|e| e.to_string())?;
                Ok((p.meta.name, p.meta.version, src))
            })
            .collect()
    }

    /// Stores packs (from [`StorePolicy::pack_sources`]) as versions; each becomes active unless
    /// an admin chose the active version of its pack.
    pub async fn seed(store: &herd_store::Store, sources: &[(String, u32, String)]) -> Result<(), String> {
        for (name, version, src) in sources {
            let v = i32::try_from(*version).map_err(|_| format!("pack {name}: version {version} is too large"))?;
            store.seed_pack_version(name, v, src).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The policy set and tenants as stored now.
    pub async fn build(store: &herd_store::Store, classifier: Option<&Arc<dyn herd_policies::Classifier>>) -> Result<PacksPolicy, String> {
        let sources = store.active_pack_sources().await.map_err(|e| e.to_string())?;
        let files: Vec<(String, String)> = sources.into_iter().map(|(n, v, src)| (format!("{n}@{v}"), src)).collect();
        let mut set = PolicySet::from_sources(files.iter().map(|(f, s)| (f.as_str(), s.as_str()))).map_err(|e| e.to_string())?;
        if let Some(c) = classifier {
            set = set.with_guard(Box::new(c.clone()));
        }
        let mut tenants = HashMap::new();
        for t in store.tenant_rows().await.map_err(|e| e.to_string())? {
            let tp = stored_tenant_policy(&t).map_err(|(f, e)| format!("tenant {}: {f}: {e}", t.name))?;
            tenants.insert(t.id, tp);
        }
        PacksPolicy::new(Arc::new(set), tenants)
    }

    /// Rebuilds when the stored generation changed; returns whether it did.
    pub async fn reload(&self, store: &herd_store::Store) -> Result<bool, String> {
        let g = store.policy_generation().await.map_err(|e| e.to_string())?;
        if *self.generation.lock().unwrap_or_else(|e| e.into_inner()) == g {
            return Ok(false);
        }
        let policy = Self::build(store, self.classifier.as_ref()).await?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        *self.generation.lock().unwrap_or_else(|e| e.into_inner()) = g;
        Ok(true)
    }

    /// Polls the store every `every` and reloads on change, until `shutdown` turns true.
    pub fn watch(self: &Arc<Self>, store: herd_store::Store, every: std::time::Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => return,
                }
                if *shutdown.borrow() {
                    return;
                }
                match me.reload(&store).await {
                    Ok(true) => {
                        failing = false;
                        tracing::info!("policy reloaded from the database");
                    }
                    Ok(false) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!(error = %e, "the stored policy does not build; keeping the running one");
                    }
                    Err(_) => {}
                }
            }
        });
    }

    fn now(&self) -> Arc<PacksPolicy> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl PolicyHook for StorePolicy {
    fn check_input(&self, ctx: &TurnContext<'_>) -> (Decision, Vec<DecisionRecord>) {
        self.now().check_input(ctx)
    }

    fn check_output(&self, ctx: &TurnContext<'_>, input: &Decision, reply: &str, attempt: u32) -> (Output, Vec<DecisionRecord>) {
        self.now().check_output(ctx, input, reply, attempt)
    }
}
