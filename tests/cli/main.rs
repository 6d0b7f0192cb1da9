//! Integration tests: the real `deploy` binary against real git repositories in temp dirs.

mod harness;

mod adopt;
#[cfg(feature = "failpoints")]
mod attack19;
mod auditor;
mod check;
mod commands;
#[cfg(feature = "failpoints")]
mod crash;
mod deploy;
mod etcd;
mod examples;
#[cfg(feature = "failpoints")]
mod exec;
#[cfg(feature = "failpoints")]
mod exec_session;
#[cfg(feature = "failpoints")]
mod exec_ssm;
mod fitness;
mod fixtures;
mod forward;
mod gate;
mod harden;
mod hooks;
mod interrupt;
mod lifecycle;
mod log;
mod markdown;
mod moto;
mod paging;
mod pipes;
mod progress;
mod prometheus;
mod prompt;
mod provider_ssm;
mod reviewed;
#[cfg(feature = "failpoints")]
mod rollout;
#[cfg(feature = "failpoints")]
mod rollout_attack;
mod sarif;
mod seal;
mod secrets;
#[cfg(feature = "failpoints")]
mod shared_state;
mod signals;
mod signing;
mod state;
mod status;
#[cfg(feature = "failpoints")]
mod store;
mod worktree;
