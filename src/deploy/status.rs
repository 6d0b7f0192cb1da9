//! `deploy status --target NAME`: which generation is live, from which commit, whether the
//! live files still are what envlock wrote (drift), and whether the repository moved on.
//! Reads only, after the same stamp and identity checks as a deployment.

use anyhow::Result;
use serde::Serialize;

use super::Deployment;
use super::journal::Journal;
use crate::output::style;
use crate::plan;
use crate::target::{Drift, GenerationId, Stamp, StampState};

#[derive(Debug, Serialize)]
pub struct Status {
    pub ok: bool,
    pub environment: String,
    pub account: String,
    pub target: String,
    /// The target's stamp; `None` while the target is empty (not adopted yet).
    pub stamp: Option<Stamp>,
    pub live: Option<LiveGeneration>,
    /// The commit HEAD resolves to.
    pub head: String,
    /// What deploying HEAD would change.
    pub pending: super::apply::Counts,
    /// The resources deploying HEAD would touch.
    pub pending_resources: Vec<String>,
    pub drift: Drift,
    /// HEAD is behind, or diverged from, the live commit (a deployment of HEAD is refused).
    pub backwards: Option<super::forward::Backwards>,
    pub generations: Vec<GenerationRow>,
    /// An interrupted deployment that the next deploy will resolve.
    pub interrupted: Option<String>,
    /// Work files of interrupted runs (relative to the target) that the next apply deletes.
    pub leftovers: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct LiveGeneration {
    pub id: GenerationId,
    pub commit: String,
    pub created: String,
    pub operator: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GenerationRow {
    pub id: GenerationId,
    pub commit: String,
    pub created: String,
    pub live: bool,
    /// Why it failed its health check, when it did; a rollback never picks it by default.
    pub failed: Option<String>,
}

/// Gather the status (and print it in text mode).
pub fn status(d: &Deployment<'_>) -> Result<Status> {
    let stamp = d.verify_owner()?;
    let interrupted = d
        .target
        .read_journal()
        .map_err(|e| d.target_failure(e))?
        .map(|bytes| {
            Journal::from_bytes(&bytes)
                .map(|j| j.describe())
                .unwrap_or_else(|e| format!("unreadable journal: {e}"))
        });
    let live = d.target.live().map_err(|e| d.target_failure(e))?;
    let gens = d.target.generations().map_err(|e| d.target_failure(e))?;
    let current = gens.iter().find(|g| g.live);
    let drift = d.target.drift().map_err(|e| d.target_failure(e))?;
    // `status` needs no secret values: without them, secrets count as unchanged.
    let resolved = super::apply::resolve_secrets(d).unwrap_or_else(|e| {
        let assumed = crate::secret::Resolved::assume_live(d.env, &live.resources);
        d.printer.redact(assumed.values());
        d.warn(&format!(
            "{e}; changes to secret values are not counted below"
        ));
        assumed
    });
    let (_, key) = super::apply::secret_key(d)?;
    let plan = plan::compute(
        plan::desired(d.env, &resolved, &key),
        &live.resources,
        &super::apply::live_secrets(d, &live)?,
        &key,
    );
    let status = Status {
        ok: true,
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        target: d.target.describe(),
        stamp: match stamp {
            StampState::Stamped(s) => Some(s),
            _ => None,
        },
        live: current.map(|g| LiveGeneration {
            id: g.id,
            commit: g.commit.clone(),
            created: g.created.clone(),
            operator: g
                .meta
                .get("operator")
                .and_then(|o| o.as_str())
                .map(str::to_owned),
        }),
        head: d.commit.id.to_string(),
        pending: super::apply::Counts::of(&plan),
        pending_resources: plan.changes.iter().map(|c| c.resource.clone()).collect(),
        drift,
        backwards: super::forward::finding(d)?,
        generations: gens
            .iter()
            .map(|g| GenerationRow {
                id: g.id,
                commit: g.commit.clone(),
                created: g.created.clone(),
                live: g.live,
                failed: g.failed.clone(),
            })
            .collect(),
        interrupted,
        leftovers: d.target.leftovers().map_err(|e| d.target_failure(e))?,
    };
    if !d.printer.is_json() {
        d.printer.out(&render(d, &status, &plan))?;
    }
    Ok(status)
}

fn render(d: &Deployment<'_>, s: &Status, plan: &plan::Plan) -> String {
    let p = d.printer;
    use super::apply::short;
    let mut out = format!("Status of {}\n", d.who());
    out.push_str(&format!("  target:      {}", s.target));
    match &s.stamp {
        Some(stamp) => out.push_str(&format!(
            " — stamped for `{}` (account {}) since {}\n",
            stamp.environment, stamp.account, stamp.created
        )),
        None => out.push_str(" — empty: not adopted yet (the first deploy adopts it)\n"),
    }
    match &s.live {
        Some(live) => out.push_str(&format!(
            "  live:        generation {}, commit {}, applied {}{}\n",
            live.id,
            short(&live.commit),
            live.created,
            live.operator
                .as_ref()
                .map(|o| format!(" by {o}"))
                .unwrap_or_default()
        )),
        None => out.push_str("  live:        nothing deployed\n"),
    }
    let moved = s.live.as_ref().is_none_or(|l| l.commit != s.head);
    if plan.is_empty() {
        out.push_str(&format!(
            "  repository:  HEAD {} — up to date{}\n",
            short(&s.head),
            if moved {
                " (the configuration is identical; only the commit differs)"
            } else {
                ""
            }
        ));
    } else {
        out.push_str(&format!(
            "  repository:  HEAD {} — {} {}\n",
            short(&s.head),
            p.paint_out(style::WARN, "not deployed:"),
            plan.summary()
        ));
        out.push_str(&format!(
            "               run `deploy plan --target {}` to see the diff\n",
            s.environment
        ));
    }
    if let Some(b) = &s.backwards {
        out.push_str(&format!(
            "  {}      {}\n               {}\n",
            p.paint_out(style::ERROR, "BEHIND:"),
            b.message(&s.environment),
            b.hint(&s.environment)
        ));
    }
    let d_ = &s.drift;
    // Remote stores are changed by other tools and people; local files by hand.
    let etcd = !matches!(d.env.target.kind, crate::config::TargetKind::Dir { .. });
    let things = match d.env.target.kind {
        crate::config::TargetKind::Etcd { .. } => "keys",
        crate::config::TargetKind::Exec { .. } => "resources",
        crate::config::TargetKind::Dir { .. } => "files",
    };
    let where_ = |n: &str| match &d.env.target.kind {
        crate::config::TargetKind::Etcd { prefix, .. } => format!("{}{n}", prefix.value),
        crate::config::TargetKind::Exec { .. } => format!("`{n}`"),
        crate::config::TargetKind::Dir { .. } => format!("current/{n}.toml"),
    };
    if s.live.is_none() {
        out.push_str("  drift:       -\n");
    } else if !d_.checked {
        out.push_str("  drift:       unknown (this generation has no checksums)\n");
    } else if d_.is_clean() {
        out.push_str(&format!(
            "  drift:       none (the live {things} are exactly what envlock wrote)\n"
        ));
    } else {
        out.push_str(&format!(
            "  drift:       {} the live {things} differ from what envlock wrote:\n",
            p.paint_out(style::ERROR, "DRIFT:")
        ));
        let added = if etcd {
            "not managed by envlock"
        } else {
            "added by hand"
        };
        for (what, names) in [
            (
                if etcd {
                    "edited outside envlock"
                } else {
                    "edited by hand"
                },
                &d_.edited,
            ),
            (added, &d_.added),
            (
                if etcd {
                    "deleted outside envlock"
                } else {
                    "removed by hand"
                },
                &d_.removed,
            ),
        ] {
            for n in names {
                out.push_str(&format!("                 {what}: {}\n", where_(n)));
            }
        }
        out.push_str(&format!(
            "               `deploy --target {}` replaces them with the reviewed configuration\n",
            s.environment
        ));
    }
    if !s.generations.is_empty() {
        out.push_str("  generations:\n");
        for g in s.generations.iter().rev() {
            out.push_str(&format!(
                "    {}{:>4}  {}  {}{}\n",
                if g.live { "* " } else { "  " },
                g.id,
                short(&g.commit),
                g.created,
                g.failed
                    .as_ref()
                    .map(|why| format!("  FAILED: {why}"))
                    .unwrap_or_default()
            ));
        }
    }
    if !s.leftovers.is_empty() {
        out.push_str(&format!(
            "  leftovers:   {} (work files of an interrupted run; the next apply deletes them)\n",
            s.leftovers.join(", ")
        ));
    }
    if let Some(i) = &s.interrupted {
        out.push_str(&format!(
            "  {}   an interrupted deployment ({i}); the next deploy resolves it\n",
            p.paint_out(style::WARN, "journal:")
        ));
    }
    out
}
