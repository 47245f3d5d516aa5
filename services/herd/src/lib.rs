//! The service side of the `herd` command as a library: [`app::App`] builds and runs what
//! `serve`, `gateway`, `worker` and `admin serve` run — the same start-up path the end-to-end
//! tests use — and [`services`] holds the pieces it is made of.

pub mod app;
pub mod services;
