//! herd-gateway: the webhook service. It only ingests — verify the signature, parse, dedup,
//! rate-limit, enqueue — and answers within milliseconds; generation happens in the workers.

mod channels;
mod error;
mod limits;
mod routes;

pub use channels::ChannelCache;
pub use error::GatewayError;
pub use routes::{AppState, router};

use herd_core::Settings;
use herd_queue::Queue;
use herd_store::Store;
use std::sync::Arc;

/// Builds the gateway's state: channels from PostgreSQL (refreshed in the background), limiters.
pub async fn state(settings: &Settings, store: Store, queue: Queue) -> Result<AppState, herd_store::Error> {
    let channels = Arc::new(ChannelCache::load(store.clone()).await?);
    channels.clone().spawn_refresh(std::time::Duration::from_secs(30));
    let (durability, durable) = queue.durability().await;
    match durable {
        true => tracing::info!(%durability, "webhook durability"),
        false => tracing::warn!(%durability, "webhook durability"),
    }
    Ok(AppState {
        queue,
        channels,
        limits: Arc::new(limits::Limits::new(&settings.limits)),
        settings: Arc::new(settings.clone()),
        health: Default::default(),
        durability: durability.into(),
    })
}

/// Serves the gateway on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
