//! herd-core: the domain types every service shares (platforms, inbound events, delivery states),
//! the settings file, and telemetry set-up.

pub mod domain;
pub mod settings;
pub mod telemetry;

pub use domain::*;
pub use settings::Settings;
