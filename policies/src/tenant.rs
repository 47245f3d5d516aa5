//! A tenant's policy settings: where the licensee is, which packs apply, rule overrides.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a tenant overrides one rule (`"pack/rule-id"` → this).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Override {
    Enforce,
    Shadow,
    Off,
}

/// Which classifier decides a tenant's messages (and replies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Moderation {
    /// The built-in classifier (the learned model beside the rules).
    Builtin,
    /// The guard model (`policies.guard_model`, Llama Guard through herd's engine).
    Guard,
    /// The built-in classifier first; the guard model on what it lets through.
    BuiltinThenGuard,
}

impl Moderation {
    pub const ALL: [Moderation; 3] = [Moderation::Builtin, Moderation::Guard, Moderation::BuiltinThenGuard];

    pub fn as_str(self) -> &'static str {
        match self {
            Moderation::Builtin => "builtin",
            Moderation::Guard => "guard",
            Moderation::BuiltinThenGuard => "builtin_then_guard",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether this mode needs the guard model.
    pub fn needs_guard(self) -> bool {
        self != Moderation::Builtin
    }
}

/// Policy settings of one tenant.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub name: String,
    /// ISO country of the licensee's principal place of business.
    pub principal_place_of_business: String,
    /// Country assumed for users without a phone number or locale (Messenger, Instagram).
    #[serde(default)]
    pub default_country: Option<String>,
    /// Packs that apply, by name.
    pub packs: Vec<String>,
    /// Meta granted the separate license needed above the MAU threshold.
    #[serde(default)]
    pub meta_license_granted: bool,
    /// The tenant serves a multimodal Llama 4 model.
    #[serde(default)]
    pub multimodal: bool,
    /// `"pack/rule-id" = "enforce" | "shadow" | "off"`.
    #[serde(default)]
    pub overrides: BTreeMap<String, Override>,
    /// Which classifier decides; unset: the guard model when one is loaded, else the built-in one.
    #[serde(default)]
    pub moderation: Option<Moderation>,
}

impl Tenant {
    /// The demo tenant: a US licensee with the three shipped packs.
    pub fn demo() -> Self {
        Self {
            name: "demo".into(),
            principal_place_of_business: "US".into(),
            default_country: None,
            packs: vec!["llama4-license".into(), "meta-ai-rollout".into(), "balanced-moderation".into()],
            meta_license_granted: false,
            multimodal: false,
            overrides: BTreeMap::new(),
            moderation: None,
        }
    }

    /// A tenant from stored fields; overrides are `"pack/rule" → "enforce" | "shadow" | "off"`.
    /// Errors name the field.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        name: &str,
        principal_place_of_business: &str,
        default_country: Option<&str>,
        packs: &[String],
        overrides: &BTreeMap<String, String>,
        meta_license_granted: bool,
        multimodal: bool,
        moderation: Option<&str>,
    ) -> Result<Self, (String, String)> {
        if !crate::region::is_country(principal_place_of_business) {
            return Err(("principal_place_of_business".into(), format!("{principal_place_of_business:?} is not an ISO country code")));
        }
        if let Some(c) = default_country.filter(|c| !crate::region::is_country(c)) {
            return Err(("default_country".into(), format!("{c:?} is not an ISO country code")));
        }
        let mut ov = BTreeMap::new();
        for (k, v) in overrides {
            let o = match v.as_str() {
                "enforce" => Override::Enforce,
                "shadow" => Override::Shadow,
                "off" => Override::Off,
                other => return Err((format!("overrides.{k}"), format!("must be enforce, shadow or off, got {other:?}"))),
            };
            ov.insert(k.clone(), o);
        }
        let moderation = match moderation {
            None => None,
            Some(m) => Some(
                Moderation::parse(m)
                    .ok_or_else(|| ("moderation".to_string(), format!("must be builtin, guard or builtin_then_guard, got {m:?}")))?,
            ),
        };
        Ok(Self {
            moderation,
            name: name.into(),
            principal_place_of_business: principal_place_of_business.into(),
            default_country: default_country.map(str::to_string),
            packs: packs.to_vec(),
            meta_license_granted,
            multimodal,
            overrides: ov,
        })
    }

    /// Parses a tenant file (TOML); `file` names it in errors.
    pub fn parse(src: &str, file: &str) -> Result<Self, String> {
        let t: Tenant = toml::from_str(src).map_err(|e| format!("{file}: {}", e.message()))?;
        if !crate::region::is_country(&t.principal_place_of_business) {
            return Err(format!("{file}: principal_place_of_business {:?} is not an ISO country code", t.principal_place_of_business));
        }
        Ok(t)
    }
}
