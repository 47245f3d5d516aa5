//! Channels (which tenant and secrets a webhook belongs to), cached from PostgreSQL.

use herd_core::Platform;
use herd_store::{Channel, Store};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The channels by `(platform, external id)`, reloaded periodically and on a miss.
pub struct ChannelCache {
    store: Store,
    map: RwLock<HashMap<(Platform, String), Arc<Channel>>>,
    last_reload: RwLock<Instant>,
}

impl ChannelCache {
    /// Loads every channel.
    pub async fn load(store: Store) -> Result<Self, herd_store::Error> {
        let c = Self { store, map: RwLock::new(HashMap::new()), last_reload: RwLock::new(Instant::now()) };
        c.reload().await?;
        Ok(c)
    }

    /// Reads the channels again.
    pub async fn reload(&self) -> Result<(), herd_store::Error> {
        let rows = self.store.channels().await?;
        let map = rows.into_iter().map(|c| ((c.platform, c.external_id.clone()), Arc::new(c))).collect();
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = map;
        *self.last_reload.write().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Ok(())
    }

    /// Reloads every `every` in the background.
    pub fn spawn_refresh(self: Arc<Self>, every: Duration) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = self.reload().await {
                    tracing::warn!(error = %e, "reloading channels failed");
                }
            }
        });
    }

    /// The channel, reloading once (at most once a second) when it is not known.
    pub async fn get(&self, platform: Platform, external_id: &str) -> Option<Arc<Channel>> {
        if let Some(c) = self.peek(platform, external_id) {
            return Some(c);
        }
        let stale = self.last_reload.read().unwrap_or_else(|e| e.into_inner()).elapsed() > Duration::from_secs(1);
        if stale && self.reload().await.is_ok() {
            return self.peek(platform, external_id);
        }
        None
    }

    fn peek(&self, platform: Platform, external_id: &str) -> Option<Arc<Channel>> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).get(&(platform, external_id.to_string())).cloned()
    }

    /// Whether any channel of `platform` has this verify token.
    pub fn verify_token_matches(&self, platform: Platform, token: &str) -> bool {
        self.map.read().unwrap_or_else(|e| e.into_inner()).values().any(|c| c.platform == platform && c.verify_token == token)
    }
}
