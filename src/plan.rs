//! Desired vs live resources -> a plan (pure: no I/O). Text diffs come from `similar`.
//!
//! Invariant: a plan is computed from exact bytes, so "no changes" means the live files are
//! byte-for-byte what this commit renders.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use similar::TextDiff;

use crate::config::Environment;
use crate::render;

/// What happens to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Change,
    Remove,
}

impl Action {
    pub fn sign(self) -> char {
        match self {
            Action::Add => '+',
            Action::Change => '~',
            Action::Remove => '-',
        }
    }
}

/// One resource's change, with a unified diff of its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub resource: String,
    pub action: Action,
    pub diff: String,
}

/// Everything that would change, and the complete desired state it leads to.
#[derive(Debug, Clone)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Every resource of the new generation, as the bytes to write.
    pub desired: BTreeMap<String, Vec<u8>>,
}

/// Render an environment's resources as the files a target stores.
pub fn desired(env: &Environment) -> BTreeMap<String, Vec<u8>> {
    env.settings
        .iter()
        .map(|(name, res)| (name.clone(), render::resource_toml(&res.node).into_bytes()))
        .collect()
}

/// Compare desired and live resources.
pub fn compute(desired: BTreeMap<String, Vec<u8>>, live: &BTreeMap<String, Vec<u8>>) -> Plan {
    let mut changes = Vec::new();
    for (name, new) in &desired {
        match live.get(name) {
            None => changes.push(Change {
                resource: name.clone(),
                action: Action::Add,
                diff: unified(name, b"", new),
            }),
            Some(old) if old != new => changes.push(Change {
                resource: name.clone(),
                action: Action::Change,
                diff: unified(name, old, new),
            }),
            Some(_) => {}
        }
    }
    for (name, old) in live {
        if !desired.contains_key(name) {
            changes.push(Change {
                resource: name.clone(),
                action: Action::Remove,
                diff: unified(name, old, b""),
            });
        }
    }
    changes.sort_by(|a, b| a.resource.cmp(&b.resource));
    Plan { changes, desired }
}

fn unified(name: &str, old: &[u8], new: &[u8]) -> String {
    let (old, new) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
    TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("live/{name}.toml"),
            &format!("desired/{name}.toml"),
        )
        .to_string()
}

impl Plan {
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// `Plan: 1 to add, 2 to change, 0 to remove.`
    pub fn summary(&self) -> String {
        format!(
            "Plan: {} to add, {} to change, {} to remove.",
            self.count(Action::Add),
            self.count(Action::Change),
            self.count(Action::Remove)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn classifies_add_change_remove_and_ignores_equal() {
        let live = map(&[("a", "x = 1\n"), ("b", "y = 1\n"), ("c", "z = 1\n")]);
        let desired = map(&[("a", "x = 1\n"), ("b", "y = 2\n"), ("d", "w = 1\n")]);
        let plan = compute(desired, &live);
        let got: Vec<(&str, Action)> = plan
            .changes
            .iter()
            .map(|c| (c.resource.as_str(), c.action))
            .collect();
        assert_eq!(
            got,
            [
                ("b", Action::Change),
                ("c", Action::Remove),
                ("d", Action::Add)
            ]
        );
        assert_eq!(plan.summary(), "Plan: 1 to add, 1 to change, 1 to remove.");
        assert!(plan.changes[0].diff.contains("-y = 1\n+y = 2\n"));
        assert_eq!(plan.desired.len(), 3);
    }

    #[test]
    fn identical_state_is_an_empty_plan() {
        let live = map(&[("a", "x = 1\n")]);
        let plan = compute(live.clone(), &live);
        assert!(plan.is_empty());
        assert_eq!(plan.summary(), "Plan: 0 to add, 0 to change, 0 to remove.");
    }
}
