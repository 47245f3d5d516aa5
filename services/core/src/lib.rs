//! herd-core: the domain types every service shares (platforms, inbound events, delivery states,
//! the states of stored records), the settings file, and telemetry set-up.

pub mod domain;
pub mod health;
pub mod settings;
pub mod states;
pub mod telemetry;

pub use domain::*;
pub use health::Health;
pub use settings::Settings;
pub use states::{MessageStatus, OutboxState};
