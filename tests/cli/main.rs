//! Integration tests: the real `deploy` binary against real git repositories in temp dirs.

mod harness;

mod check;
mod commands;
mod fixtures;
mod worktree;
