//! Per-sender and per-tenant rate limits (governor, in this process).

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use herd_core::settings::LimitSettings;
use std::num::NonZeroU32;

/// The limiters of one gateway process.
pub struct Limits {
    sender: DefaultKeyedRateLimiter<(i64, String)>,
    tenant: DefaultKeyedRateLimiter<i64>,
}

impl Limits {
    pub fn new(cfg: &LimitSettings) -> Self {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            sender: RateLimiter::keyed(Quota::per_minute(nz(cfg.sender_per_minute))),
            tenant: RateLimiter::keyed(Quota::per_second(nz(cfg.tenant_per_second))),
        }
    }

    /// True when the tenant may have one more message now (takes it from the tenant's budget).
    pub fn tenant_allows(&self, tenant: i64) -> bool {
        self.tenant.check_key(&tenant).is_ok()
    }

    /// True when the sender may have one more message now (takes it from the sender's budget).
    pub fn sender_allows(&self, tenant: i64, sender: &str) -> bool {
        self.sender.check_key(&(tenant, sender.to_string())).is_ok()
    }
}
