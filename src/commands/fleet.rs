//! The commands of a fleet environment (`[targets.NAME]`): `deploy --target NAME` rolls out in
//! waves, `plan` and `status` show every target, `adopt` adopts each. The commands that act on
//! one target's history (`rollback`, `migrate`, `log seal`, `apply --plan FILE`) are refused:
//! run on one target of a fleet they would leave the fleet split between two configurations.

use anyhow::Result;
use envlock::config::Environment;
use envlock::config::fleet::Fleet;
use envlock::deploy::{self, Deployment, rollout};
use envlock::error::{Exit, Failure};
use envlock::output::{Format, Printer};
use serde::Serialize;

use super::plan::Job;

pub(super) fn run_job(
    d: &Deployment<'_>,
    fleet: &Fleet,
    job: Job,
    printer: &Printer,
) -> Result<Exit> {
    match job {
        Job::Apply { yes, saved: None } => {
            let report = rollout::apply(d, fleet, yes)?;
            if printer.is_json() {
                printer.json(&report)?;
            }
            if report.ok {
                return Ok(Exit::Success);
            }
            let mut f = report.failure().json_printed(printer.is_json());
            if report.halt.is_some() {
                // The notifier heard of the halt when it happened.
                f = f.not_notified();
            }
            Err(f.into())
        }
        Job::Plan {
            out: None,
            detailed_exitcode,
        } => plan(d, fleet, detailed_exitcode, printer),
        Job::Status => status(d, fleet, printer),
        Job::Adopt { yes } => each(d, fleet, |m| {
            let r = deploy::adopt::adopt(m, yes)?;
            Ok(serde_json::to_value(&r)?)
        })
        .and_then(|all| print_all(d, printer, all, None)),
        job => Err(Failure::refused(format!(
            "`{}` is a fleet of {} targets: {} acts on one target and would split the fleet \
             between two configurations",
            d.env.name,
            fleet.members.len(),
            what(&job)
        ))
        .hint(format!(
            "to go back, revert the commit and run `deploy --target {}`: the rollout reaches \
             every target, or none",
            d.env.name
        ))
        .into()),
    }
}

fn what(job: &Job) -> &'static str {
    match job {
        Job::Apply { .. } => "applying a saved plan (`--plan FILE`)",
        Job::Plan { .. } => "saving a plan (`--out FILE`)",
        Job::Rollback { .. } => "`deploy rollback`",
        Job::Migrate { .. } => "`deploy migrate`",
        Job::Seal { .. } => "`deploy log seal`",
        _ => "this command",
    }
}

/// Run `f` on each target's deployment, in rollout order, and collect what it returns.
fn each(
    d: &Deployment<'_>,
    fleet: &Fleet,
    mut f: impl FnMut(&Deployment<'_>) -> Result<serde_json::Value>,
) -> Result<Vec<(String, serde_json::Value)>> {
    let envs: Vec<Environment> = fleet.members.iter().map(|m| d.env.member(m)).collect();
    let mut all = Vec::with_capacity(envs.len());
    for (env, m) in envs.iter().zip(&fleet.members) {
        // Each heading names the target (`Deployment::who`).
        let md = d.member(env, &m.name)?;
        all.push((m.name.clone(), f(&md)?));
    }
    Ok(all)
}

#[derive(Serialize)]
struct FleetDoc<'a> {
    ok: bool,
    environment: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<rollout::RolloutJournal>,
    /// Whether the rollout's run still holds the first target's lock (false: interrupted).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    rollout_running: bool,
    targets: Vec<Member>,
}

#[derive(Serialize)]
struct Member {
    name: String,
    #[serde(flatten)]
    report: serde_json::Value,
}

/// With `--format json`, one document: the rollout under way (if any) and each target's report.
fn print_all(
    d: &Deployment<'_>,
    printer: &Printer,
    all: Vec<(String, serde_json::Value)>,
    rollout: Option<(rollout::RolloutJournal, bool)>,
) -> Result<Exit> {
    if printer.is_json() {
        let running = rollout.as_ref().is_some_and(|(_, r)| *r);
        printer.json(&FleetDoc {
            ok: true,
            environment: &d.env.name,
            rollout: rollout.map(|(j, _)| j),
            rollout_running: running,
            targets: all
                .into_iter()
                .map(|(name, report)| Member { name, report })
                .collect(),
        })?;
    }
    Ok(Exit::Success)
}

/// `deploy plan` of a fleet: every target's plan, in rollout order.
fn plan(d: &Deployment<'_>, fleet: &Fleet, detailed: bool, printer: &Printer) -> Result<Exit> {
    let mut pending = false;
    // `--format markdown`: one comment, each target's plan in turn.
    let mut comment = String::new();
    let all = each(d, fleet, |m| {
        let r = deploy::apply::plan(m, false)?;
        pending |= !r.changes.is_empty();
        if printer.format == Format::Markdown {
            // One comment for the fleet: each target's share of the budget (each plan's table
            // names its target).
            let budget = envlock::markdown::BUDGET / fleet.members.len();
            comment.push_str(&super::plan::plan_markdown(m, &r, budget));
            comment.push('\n');
        }
        Ok(serde_json::to_value(&r)?)
    })?;
    if printer.format == Format::Markdown {
        printer.out(&comment)?;
    }
    print_all(d, printer, all, None)?;
    Ok(if detailed && pending {
        Exit::ChangesPending
    } else {
        Exit::Success
    })
}

/// `deploy status` of a fleet: a rollout under way (from its journal), then every target.
fn status(d: &Deployment<'_>, fleet: &Fleet, printer: &Printer) -> Result<Exit> {
    // Every target is looked at, as the next `deploy` does: a journal stays found when the
    // configuration changed which target comes first.
    let mut found = None;
    for m in &fleet.members {
        let env = d.env.member(m);
        let md = d.member(&env, &m.name)?;
        md.verify_owner()?;
        if let Some(j) = rollout::read_journal(&md)? {
            let running = deploy::status::activity(&md)?.0.is_some();
            found = Some((j, running));
            break;
        }
    }
    let (journal, running) = match found {
        Some((j, running)) => (Some(j), running),
        None => (None, false),
    };
    if let (Some(j), false) = (&journal, printer.is_json()) {
        printer.out(&rollout::describe_journal(j, running))?;
    }
    let all = each(d, fleet, |m| {
        let s = deploy::status::status(m)?;
        Ok(serde_json::to_value(&s)?)
    })?;
    print_all(d, printer, all, journal.map(|j| (j, running)))
}
