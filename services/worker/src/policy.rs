//! The policy hook the worker calls before and after generation. The policy layer (region
//! rules, moderation) plugs in here; [`AllowAll`] is the default.

/// What the worker knows about a turn when it asks the policy.
#[derive(Clone, Debug)]
pub struct TurnContext<'a> {
    pub tenant_id: i64,
    pub platform: herd_core::Platform,
    pub sender: &'a str,
    pub text: &'a str,
}

/// A policy decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Go on.
    Allow,
    /// Do not generate (or do not send the generated text); send this instead.
    Replace(String),
    /// Send nothing.
    Block,
}

/// Input check before generation, output check after.
pub trait PolicyHook: Send + Sync {
    fn check_input(&self, ctx: &TurnContext<'_>) -> Decision;
    fn check_output(&self, ctx: &TurnContext<'_>, reply: &str) -> Decision;
}

/// Allows everything.
pub struct AllowAll;

impl PolicyHook for AllowAll {
    fn check_input(&self, _: &TurnContext<'_>) -> Decision {
        Decision::Allow
    }
    fn check_output(&self, _: &TurnContext<'_>, _: &str) -> Decision {
        Decision::Allow
    }
}
