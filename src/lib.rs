//! envlock: environment-locked deployments.
//!
//! The library resolves environments from one git commit ([`repo`], [`config`]), enforces the
//! environment lock ([`safety`]), and reports problems ([`diagnostic`], [`output`]).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod audit;
pub mod config;
pub mod deploy;
pub mod diagnostic;
pub mod error;
pub mod failpoint;
pub mod hash;
pub mod log;
pub mod markdown;
pub mod output;
pub mod page;
pub mod parallel;
pub mod plan;
pub mod process;
pub mod progress;
pub mod redact;
pub mod render;
pub mod repo;
pub mod rules;
pub mod safety;
pub mod sarif;
pub mod secret;
pub mod signal;
pub mod signing;
pub mod source;
pub mod sysenv;
pub mod target;
pub mod workspace;
