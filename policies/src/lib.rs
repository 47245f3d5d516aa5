//! herd-policies: the policy layer as pure decisions — no IO crates. Policy packs (TOML in
//! `policies/packs/`) hold the rules; [`PolicySet::evaluate`] decides for one message who may be
//! served and how to answer; [`PolicySet::check_output`] looks at a reply before it is sent.
//!
//! - [`pack`] — the pack format and its validation;
//! - [`region`] — countries of phone numbers and locales, country groups;
//! - [`classify`] — moderation classifiers (the built-in rules-with-context one);
//! - [`learned`] — the learned n-gram classifier, its training and the shipped model;
//! - [`tenant`] — a tenant's policy settings;
//! - [`decide`] — evaluation (`PolicySet`).

pub mod bench;
pub mod classify;
pub mod decide;
pub mod learned;
pub mod pack;
pub mod region;
pub mod tenant;

pub use classify::{Classification, Classifier, RuleClassifier};
pub use decide::{Action, Decision, OutputCheck, PolicySet, RuleHit, Subject};
pub use learned::LearnedClassifier;
pub use pack::{Pack, PackError};
pub use tenant::Tenant;
