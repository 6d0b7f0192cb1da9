//! A fleet's rollout: `deploy --target prod` for an environment of several targets
//! (`[targets.NAME]`), deployed in waves (`[[rollout.wave]]`), each wave baked while its
//! signals (`[[rollout.verify]]`) are read again and again.
//!
//! Phases: prepare every target (owner, recovery, gate, plan) -> one plan, one confirmation
//! -> every target's lock -> per wave: apply each target (the single-target deployment, with
//! its health check) -> bake -> next wave. Any failure halts the rollout and undoes every
//! target already changed, in reverse order, to the generation live before it.
//!
//! Invariants:
//! - nothing is written before every target proved its owner and planned, and before every
//!   target's lock is held;
//! - the rollout journal (in the first target's state, beside its own journal) names every
//!   target before it is changed, with the generation live before: a run that dies at any
//!   instant is undone by the next one ([`recover`]); a rollout is never completed by
//!   anybody but the run that watched every bake;
//! - a signal that cannot be read, has no data or reads NaN fails the wave.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::Deployment;
use super::apply::{self, Prepared, Report, Start};
use crate::config::fleet::{Fleet, Wave};
use crate::config::{self, Environment};
use crate::error::{Exit, Failure};
use crate::failpoint;
use crate::log::{self, Changes, Entry, Operator, Outcome};
use crate::signal;
use crate::target::{GenerationId, Holder};

/// The blob of the first target's state that says a rollout is under way.
const JOURNAL: &str = "rollout";
const VERSION: u32 = 1;

/// What a rollout under way has done, written before each step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutJournal {
    pub version: u32,
    pub environment: String,
    pub account: String,
    pub commit: String,
    pub holder: Holder,
    pub started: String,
    /// Each wave's name.
    pub waves: Vec<String>,
    /// The wave under way (0-based).
    pub wave: usize,
    /// `applying`, `baking` or `undoing`.
    pub phase: String,
    /// Every target the rollout has begun to change, in order, with what was live before.
    pub changed: Vec<Changed>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changed {
    pub target: String,
    pub before: Option<GenerationId>,
    pub after: Option<GenerationId>,
}

/// What a rollout did, for people and `--format json`.
#[derive(Debug, Serialize)]
pub struct RolloutReport {
    pub ok: bool,
    pub environment: String,
    pub account: String,
    pub commit: String,
    /// `applied`, `unchanged`, `halted` (failed and undone), `recovered` (an interrupted
    /// rollout was undone; nothing was deployed).
    pub outcome: String,
    pub waves: Vec<WaveReport>,
    /// Each target's own report, in the order they were reached; then the undo's.
    pub targets: Vec<Report>,
    pub undone: Vec<Restored>,
    pub halt: Option<Halt>,
    pub recovered: Vec<String>,
    pub log: Option<apply::LogRef>,
}

#[derive(Debug, Serialize)]
pub struct WaveReport {
    pub name: String,
    pub targets: Vec<String>,
    pub bake_seconds: f64,
    /// `passed`, `failed`, `not-reached`.
    pub result: String,
    /// How many times the signals were read while it baked.
    pub readings: usize,
}

/// One target made what it was before the rollout again.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub target: String,
    /// Live now.
    pub generation: Option<GenerationId>,
    pub report: Report,
}

/// Why a rollout stopped.
#[derive(Debug, Clone, Serialize)]
pub struct Halt {
    pub wave: String,
    pub target: String,
    pub signal: String,
    pub value: String,
}

impl Halt {
    fn cancelled(&self) -> bool {
        self.signal == "Ctrl-C"
    }

    fn line(&self) -> String {
        if self.cancelled() {
            return format!(
                "cancelled by the operator (Ctrl-C) in wave `{}`{}",
                self.wave,
                if self.target.is_empty() {
                    String::new()
                } else {
                    format!(", target `{}`", self.target)
                }
            );
        }
        format!(
            "wave `{}` failed: target `{}`: {} = {}",
            self.wave, self.target, self.signal, self.value
        )
    }
}

/// One target of the rollout: its deployment and, once planned, its prepared apply.
struct Part<'a> {
    d: Deployment<'a>,
    prepared: Option<Box<Prepared>>,
}

/// `deploy --target NAME` of a fleet environment.
pub fn apply(d: &Deployment<'_>, fleet: &Fleet, yes: bool) -> Result<RolloutReport> {
    let envs: Vec<Environment> = fleet.members.iter().map(|m| d.env.member(m)).collect();
    let mut parts = Vec::with_capacity(envs.len());
    for (env, m) in envs.iter().zip(&fleet.members) {
        parts.push(Part {
            d: d.member(env, &m.name)?,
            prepared: None,
        });
    }
    let mut report = RolloutReport::new(d, fleet);
    if recover(d, &parts, &mut report)? {
        return Ok(report);
    }
    for p in &mut parts {
        match apply::prepare(&p.d, yes, None)? {
            Start::Ready(mut prepared) => {
                // The recovery of this target's own interrupted run took its lock: the rollout
                // holds that one (taking it again would find it held, by this very run).
                if let Some(lock) = prepared.take_lock() {
                    *p.d.held.borrow_mut() = Some(lock);
                }
                p.prepared = Some(prepared);
            }
            Start::Done(r) => {
                // That target's own interrupted run was rolled back: this run ends there,
                // having deployed nothing (exit 4, as for one target).
                report.ok = false;
                report.outcome = "recovered".into();
                report.recovered.extend(r.recovered.iter().cloned());
                report.targets.push(*r);
                return Ok(report);
            }
        }
    }
    show(d, fleet, &mut parts, yes)?;
    let changes = parts
        .iter()
        .filter(|p| p.prepared.as_ref().is_some_and(|x| x.changes()))
        .count();
    if changes > 0 {
        d.confirm(
            yes,
            &format!(
                "roll these changes out to {changes} of {} targets in {} waves",
                parts.len(),
                fleet.waves.len()
            ),
        )?;
    }
    hold_locks(&parts)?;
    failpoint::hit("rollout-after-locks");
    for p in &mut parts {
        if let Some(prepared) = p.prepared.as_mut().filter(|x| x.changes()) {
            apply::adopt_early(&p.d, prepared)?;
        }
    }
    // With nothing to change, each target's health check and one reading of the signals
    // verify what is live (recorded for the promotion gate); there is nothing to bake, once a
    // rollout of this commit watched every bake. Targets that hold the commit without such a
    // record (a run killed while baking, its journal removed since) bake every wave again.
    let watched = changes == 0 && rolled_out(d, &parts[0].d)?;
    let bake_for = |w: &Wave| if watched { Duration::ZERO } else { w.bake };
    run_waves(d, fleet, &mut parts, &mut report, &bake_for)?;
    Ok(report)
}

/// Whether the newest rollout record in the first target's log is this commit's, applied
/// (or found unchanged): a rollout of it watched every bake.
fn rolled_out(d: &Deployment<'_>, lead: &Deployment<'_>) -> Result<bool> {
    let bytes = lead
        .target
        .log_read()
        .map_err(|e| lead.target_failure(e))?
        .unwrap_or_default();
    let commit = d.commit.id.to_string();
    Ok(log::records(&bytes)
        .into_iter()
        .rev()
        .find(|r| r.action == log::Action::Rollout)
        .is_some_and(|r| {
            r.commit == commit && matches!(r.outcome, Outcome::Applied | Outcome::Unchanged)
        }))
}

/// Every target's lock, taken in rollout order before the first write; each is let go when
/// its deployment is dropped, at the end of the run.
fn hold_locks(parts: &[Part<'_>]) -> Result<()> {
    for p in parts {
        p.d.hold_lock()?;
    }
    Ok(())
}

impl RolloutReport {
    fn new(d: &Deployment<'_>, fleet: &Fleet) -> Self {
        RolloutReport {
            ok: true,
            environment: d.env.name.clone(),
            account: d.env.account.value.clone(),
            commit: d.commit.id.to_string(),
            outcome: "applied".into(),
            waves: fleet
                .waves
                .iter()
                .map(|w| WaveReport {
                    name: w.name.clone(),
                    targets: w.targets.clone(),
                    bake_seconds: w.bake.as_secs_f64(),
                    result: "not-reached".into(),
                    readings: 0,
                })
                .collect(),
            targets: Vec::new(),
            undone: Vec::new(),
            halt: None,
            recovered: Vec::new(),
            log: None,
        }
    }

    /// The failure a halted or recovered rollout exits with (4).
    pub fn failure(&self) -> Failure {
        let message = match (&self.halt, self.outcome.as_str()) {
            (Some(h), _) => format!(
                "the rollout of `{}` was halted and undone: {}",
                self.environment,
                h.line()
            ),
            (None, "recovered") => format!(
                "an interrupted rollout of `{}` was found and undone; nothing was deployed by this run",
                self.environment
            ),
            _ => format!("the rollout of `{}` failed", self.environment),
        };
        let mut f = Failure::new(Exit::RolledBack, message);
        for line in &self.recovered {
            f = f.detail(line.clone());
        }
        for r in &self.undone {
            f = f.detail(format!(
                "restored target `{}`: {} live",
                r.target,
                r.generation
                    .map_or("nothing".to_owned(), |g| format!("generation {g}"))
            ));
        }
        f.hint(if self.halt.as_ref().is_some_and(Halt::cancelled) {
            format!(
                "every target is as it was before the rollout (not health-checked again after the cancel); nothing says the configuration is wrong: run `deploy --target {}` again when ready",
                self.environment
            )
        } else if self.halt.is_some() {
            format!(
                "every target is as it was before the rollout; fix the cause, then run `deploy --target {}` again",
                self.environment
            )
        } else {
            format!(
                "every target is as it was before the interrupted rollout; run `deploy --target {}` again to roll out from the first wave",
                self.environment
            )
        })
    }
}

/// The plan of every target, grouped, each under its wave.
fn show(d: &Deployment<'_>, fleet: &Fleet, parts: &mut [Part<'_>], yes: bool) -> Result<()> {
    if d.printer.is_text() {
        let waves: Vec<String> = fleet
            .waves
            .iter()
            .map(|w| {
                format!(
                    "{} ({}; bake {})",
                    w.name,
                    w.targets.join(", "),
                    config::duration::format(w.bake)
                )
            })
            .collect();
        d.printer.out(&format!(
            "Rollout of `{}` in {} waves: {}\n\n",
            d.env.name,
            waves.len(),
            waves.join(" -> ")
        ))?;
    }
    for p in parts.iter_mut() {
        if let Some(prepared) = p.prepared.as_mut() {
            apply::show(&p.d, yes, prepared)?;
        }
    }
    Ok(())
}

/// Wave after wave; a failure halts and undoes (into `report`).
fn run_waves(
    d: &Deployment<'_>,
    fleet: &Fleet,
    parts: &mut [Part<'_>],
    report: &mut RolloutReport,
    bake_for: &dyn Fn(&Wave) -> Duration,
) -> Result<()> {
    let mut journal = RolloutJournal {
        version: VERSION,
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        commit: d.commit.id.to_string(),
        holder: Holder::this_process(&d.env.name),
        started: crate::target::now_rfc3339(),
        waves: fleet.waves.iter().map(|w| w.name.clone()).collect(),
        wave: 0,
        phase: "applying".into(),
        changed: Vec::new(),
    };
    for p in parts.iter() {
        p.d.arm_interrupts();
    }
    let lead = &parts[0].d;
    write(lead, &journal)?;
    for (i, wave) in fleet.waves.iter().enumerate() {
        journal.wave = i;
        journal.phase = "applying".into();
        d.say(&format!(
            "Wave {} of {} `{}`: {} (bake {}).",
            i + 1,
            fleet.waves.len(),
            wave.name,
            wave.targets.join(", "),
            config::duration::format(bake_for(wave))
        ));
        let halt = match apply_wave(wave, parts, &mut journal, report) {
            Ok(None) => {
                journal.phase = "baking".into();
                write(&parts[0].d, &journal)?;
                failpoint::hit("rollout-baking");
                bake(
                    fleet,
                    wave,
                    bake_for(wave),
                    parts,
                    &journal,
                    &mut report.waves[i],
                )
            }
            Ok(Some(h)) => Some(h),
            Err(e) => Some(Halt {
                wave: wave.name.clone(),
                target: journal
                    .changed
                    .last()
                    .map(|c| c.target.clone())
                    .unwrap_or_default(),
                signal: "the apply".into(),
                value: format!("{e:#}"),
            }),
        };
        if let Some(h) = halt {
            report.waves[i].result = "failed".into();
            return halt_and_undo(d, parts, &mut journal, report, h);
        }
        report.waves[i].result = "passed".into();
    }
    let outcome = if report.targets.iter().all(|r| r.outcome == "unchanged") {
        report.outcome = "unchanged".into();
        Outcome::Unchanged
    } else {
        Outcome::Applied
    };
    finish(d, parts, &journal.changed, report, outcome, None)?;
    clear(&parts[0].d);
    Ok(())
}

/// Apply each target of `wave` (its own health check included); the first that fails halts.
fn apply_wave(
    wave: &Wave,
    parts: &mut [Part<'_>],
    journal: &mut RolloutJournal,
    report: &mut RolloutReport,
) -> Result<Option<Halt>> {
    for name in &wave.targets {
        let i = parts
            .iter()
            .position(|p| p.d.member.as_deref() == Some(name.as_str()))
            .expect("a wave names only the fleet's targets (checked when loaded)");
        let Some(prepared) = parts[i].prepared.take() else {
            continue;
        };
        journal.changed.push(Changed {
            target: name.clone(),
            before: prepared.live_generation(),
            after: None,
        });
        write(&parts[0].d, journal)?;
        failpoint::hit("rollout-before-target");
        let r = apply::execute(&parts[i].d, true, *prepared)?;
        if let Some(c) = journal.changed.last_mut() {
            c.after = r.generation;
        }
        let failed = r.outcome == "rolled-back";
        let halt = failed.then(|| Halt {
            wave: wave.name.clone(),
            target: name.clone(),
            signal: if r.cancelled {
                "Ctrl-C".into()
            } else {
                "[health] command".into()
            },
            value: r.reason.clone().unwrap_or_default(),
        });
        report.targets.push(r);
        if halt.is_some() {
            return Ok(halt);
        }
    }
    Ok(None)
}

/// Read every signal for every target changed so far, every `interval`, until `wave.bake` has
/// passed (at least once); the first failure (or Ctrl-C) is the halt.
fn bake(
    fleet: &Fleet,
    wave: &Wave,
    duration: Duration,
    parts: &[Part<'_>],
    journal: &RolloutJournal,
    report: &mut WaveReport,
) -> Option<Halt> {
    let lead = &parts[0].d;
    let targets: Vec<&str> = journal.changed.iter().map(|c| c.target.as_str()).collect();
    let until = Instant::now() + duration;
    loop {
        if lead.is_interrupted() {
            return Some(halt_of(
                wave,
                "",
                "Ctrl-C",
                "cancelled by the operator while the wave baked",
            ));
        }
        let mut last = Vec::new();
        for t in &targets {
            for signal in &fleet.verify {
                let reading = signal::evaluate(&signal.check, t, fleet.timeout);
                if !reading.ok {
                    lead.say(&format!(
                        "Wave `{}`: target `{t}`: {} = {} (FAILED; {})",
                        wave.name, reading.signal, reading.value, signal.at
                    ));
                    return Some(halt_of(wave, t, &reading.signal, &reading.value));
                }
                last.push(format!("{t}: {} = {}", reading.signal, reading.value));
            }
        }
        report.readings += 1;
        let left = until.saturating_duration_since(Instant::now());
        if !fleet.verify.is_empty() {
            lead.say(&format!(
                "Wave `{}` baking, {} left: {}",
                wave.name,
                config::duration::format(Duration::from_secs(
                    left.as_secs() + u64::from(left.subsec_nanos() > 0)
                )),
                last.join("; ")
            ));
        }
        if left.is_zero() {
            return None;
        }
        sleep_unless_interrupted(lead, left.min(fleet.interval));
    }
}

fn halt_of(wave: &Wave, target: &str, signal: &str, value: &str) -> Halt {
    Halt {
        wave: wave.name.clone(),
        target: target.to_owned(),
        signal: signal.to_owned(),
        value: value.to_owned(),
    }
}

fn sleep_unless_interrupted(d: &Deployment<'_>, total: Duration) {
    let end = Instant::now() + total;
    while !d.is_interrupted() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Tell the notifier at once, then restore every changed target in reverse order.
fn halt_and_undo(
    d: &Deployment<'_>,
    parts: &[Part<'_>],
    journal: &mut RolloutJournal,
    report: &mut RolloutReport,
    halt: Halt,
) -> Result<()> {
    let why = format!("rollout halted: {}", halt.line());
    d.say(&format!("Halting the rollout: {}.", halt.line()));
    d.notify("rolled-back", &why, Exit::RolledBack as u8);
    d.page_unrecorded("rollout", "rolled-back", &why);
    journal.phase = "undoing".into();
    write(&parts[0].d, journal)?;
    failpoint::hit("rollout-undoing");
    report.halt = Some(halt);
    undo_all(d, parts, 0, journal, report, "halted", why)
}

/// Restore every target `journal` changed, record the rollout as rolled back (with `why`), and
/// remove the journal (kept in `parts[at]`).
fn undo_all(
    d: &Deployment<'_>,
    parts: &[Part<'_>],
    at: usize,
    journal: &RolloutJournal,
    report: &mut RolloutReport,
    outcome: &str,
    why: String,
) -> Result<()> {
    report.undone = undo(parts, &journal.changed, &why)?;
    report.ok = false;
    report.outcome = outcome.into();
    finish(
        d,
        parts,
        &journal.changed,
        report,
        Outcome::RolledBack,
        Some(why),
    )?;
    clear(&parts[at].d);
    Ok(())
}

/// Make each changed target's `before` live again, last changed first.
fn undo(parts: &[Part<'_>], changed: &[Changed], why: &str) -> Result<Vec<Restored>> {
    let mut done = Vec::new();
    // A target that cannot be restored (unreachable) does not keep the others from being
    // restored; its error ends the run after them, and the journal stays for the next run.
    let mut first_error = None;
    for c in changed.iter().rev() {
        let Some(p) = part(parts, &c.target) else {
            continue;
        };
        let r = match apply::restore(&p.d, c.before, why) {
            Ok(r) => r,
            Err(e) => {
                p.d.warn(&format!("could not restore target `{}`: {e:#}", c.target));
                first_error.get_or_insert(e);
                continue;
            }
        };
        if r.previous_generation != r.generation || r.outcome != "unchanged" {
            p.d.say(&format!(
                "Restored target `{}`: {} is live again.",
                c.target,
                r.generation
                    .map_or("nothing".to_owned(), |g| format!("generation {g}"))
            ));
        }
        done.push(Restored {
            target: c.target.clone(),
            generation: r.generation,
            report: r,
        });
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// The rollout's own record, in the first target's log.
fn finish(
    d: &Deployment<'_>,
    parts: &[Part<'_>],
    changed: &[Changed],
    report: &mut RolloutReport,
    outcome: Outcome,
    reason: Option<String>,
) -> Result<()> {
    let lead = &parts[0].d;
    let name = |g: Option<GenerationId>| g.map_or("none".to_owned(), |g| g.to_string());
    let summary: Vec<String> = changed
        .iter()
        .map(|c| format!("{} {} -> {}", c.target, name(c.before), name(c.after)))
        .collect();
    let entry = Entry {
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        target: d.env.target_label(),
        action: log::Action::Rollout,
        outcome,
        commit: d.commit.id.to_string(),
        config_sha256: crate::plan::settings_sha256(d.env),
        operator: Operator::current(),
        changes: Changes::default(),
        generation: None,
        previous_generation: None,
        reason: Some(match reason {
            Some(r) => format!("{r}; generations: {} (each restored)", summary.join(", ")),
            None => format!("generations: {}", summary.join(", ")),
        }),
        plan_sha256: None,
        notify: None,
        signing: d.signing.clone(),
        resources: None,
    };
    // A halt paged when it happened; a success or a recovery pages with its record.
    let entry = if report.halt.is_some() {
        entry
    } else {
        d.page(entry)
    };
    let r = log::append(&*lead.target, entry)
        .map_err(|e| Failure::error(format!("the rollout's record could not be written: {e}")))?;
    report.log = Some(apply::LogRef {
        seq: r.seq,
        hash: r.hash,
    });
    if outcome == Outcome::Unchanged {
        d.say(&format!(
            "No changes: all {} targets of `{}` already hold commit {}'s configuration, and passed.",
            parts.len(),
            d.env.name,
            d.commit.short()
        ));
    } else if outcome == Outcome::Applied {
        d.say(&format!(
            "{} `{}` is live on all {} targets (commit {}).",
            d.printer.paint(crate::output::style::OK, "Rolled out:"),
            d.env.name,
            parts.len(),
            d.commit.short()
        ));
    }
    Ok(())
}

fn write(lead: &Deployment<'_>, journal: &RolloutJournal) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(journal)?;
    lead.target
        .write_blob(JOURNAL, &bytes)
        .map_err(|e| lead.target_failure(e))
}

fn clear(lead: &Deployment<'_>) {
    if let Err(e) = lead.target.clear_blob(JOURNAL) {
        lead.warn(&format!("could not remove the rollout journal: {e}"));
    }
}

/// A rollout under way (or interrupted), for `deploy status`.
/// `running`: whether its run still holds the first target's lock.
pub fn describe_journal(j: &RolloutJournal, running: bool) -> String {
    let changed: Vec<String> = j
        .changed
        .iter()
        .map(|c| {
            let g = |g: Option<GenerationId>| g.map_or("none".to_owned(), |g| g.to_string());
            format!("{} ({} -> {})", c.target, g(c.before), g(c.after))
        })
        .collect();
    format!(
        "Rollout {}: commit {}, wave {} of {} (`{}`), {}, by {}@{} (pid {}) since {}\n  targets changed: {}\n  {}\n\n",
        if running {
            "in progress"
        } else {
            "INTERRUPTED"
        },
        short(&j.commit),
        j.wave.saturating_add(1),
        j.waves.len(),
        j.waves.get(j.wave).map_or("?", String::as_str),
        j.phase,
        j.holder.user,
        j.holder.host,
        j.holder.pid,
        j.started,
        if changed.is_empty() {
            "none yet".to_owned()
        } else {
            changed.join(", ")
        },
        j.environment
    )
}

/// A commit as shown: its first 12 characters (a journal is read from a target, so any text).
fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

/// The rollout journal an earlier run left in the first target's state, if any.
pub fn read_journal(lead: &Deployment<'_>) -> Result<Option<RolloutJournal>> {
    let Some(bytes) = lead
        .target
        .read_blob(JOURNAL)
        .map_err(|e| lead.target_failure(e))?
    else {
        return Ok(None);
    };
    let unreadable = |why: String| -> anyhow::Error {
        Failure::error(format!("the rollout journal of `{}` cannot be read: {why}", lead.env.name))
            .detail(format!("in the state of {}", lead.target.describe()))
            .hint("inspect each target with `deploy status`; remove the journal only once you know what should be live")
            .into()
    };
    let journal: RolloutJournal =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    // Another version's fields may mean something else: never act on them.
    if journal.version != VERSION {
        return Err(unreadable(format!(
            "it is version {}, this envlock reads version {VERSION}",
            journal.version
        )));
    }
    Ok(Some(journal))
}

/// A journal is read from a target's state, so what it says one target held before is
/// believed only when that target agrees: what is live is what the journal says was live
/// before, or a generation of the journal's commit (the rollout's own), and the generation to
/// go back to exists. Otherwise (a stale journal restored from a backup, one forged in any
/// target's state) nothing is undone.
fn check_claim(
    d: &Deployment<'_>,
    p: &Deployment<'_>,
    journal: &RolloutJournal,
    c: &Changed,
) -> Result<()> {
    let live = p
        .target
        .live_generation()
        .map_err(|e| p.target_failure(e))?;
    if live == c.before {
        return Ok(());
    }
    let commit_of = |g: GenerationId| -> Result<Option<String>> {
        Ok(p.target
            .generation(g)
            .map_err(|e| p.target_failure(e))?
            .map(|info| info.commit))
    };
    let generation =
        |g: Option<GenerationId>| g.map_or("nothing".to_owned(), |g| format!("generation {g}"));
    let problem = match (live, c.before) {
        (Some(g), _) if commit_of(g)?.as_deref() != Some(journal.commit.as_str()) => Some(format!(
            "target `{}` has {} live, which is not of the rollout's commit {}",
            c.target,
            generation(live),
            short(&journal.commit)
        )),
        (_, Some(b)) if commit_of(b)?.is_none() => Some(format!(
            "it would make generation {b} live again on target `{}`, which has no generation {b}",
            c.target
        )),
        // The target's own log says what its live generation replaced: a journal written in
        // another target's state cannot make it go back further.
        (Some(g), before) => match replaced(p, g)? {
            // A real journal is written before its targets are changed.
            Some((replaced, time)) if replaced == before => earlier(&time, &journal.started)
                .then(|| {
                    format!(
                        "target `{}`'s live generation {g} went live at {time}, before the rollout the journal describes started ({})",
                        c.target, journal.started
                    )
                }),
            replaced => Some(format!(
                "it would make {} live again on target `{}`, but that target's log says its live generation {g} replaced {}",
                generation(before),
                c.target,
                replaced.map_or("no record".to_owned(), |(r, _)| generation(r))
            )),
        },
        _ => None,
    };
    match problem {
        Some(problem) => Err(not_undone(d, journal, &problem)),
        None => Ok(()),
    }
}

/// The refusal of a journal its targets do not bear out (exit 3, nothing undone).
fn not_undone(d: &Deployment<'_>, journal: &RolloutJournal, problem: &str) -> anyhow::Error {
    Failure::refused(format!(
        "the rollout journal of `{}` does not match its targets, so it is not undone: {problem}",
        d.env.name
    ))
    .detail(describe_journal(journal, false).trim_end().to_owned())
    .hint(format!(
        "a stale or forged journal: check each target with `deploy status --target {}`, then remove the `rollout` journal from the target's state; nothing was undone",
        d.env.name
    ))
    .into()
}

/// What generation `g` replaced when it went live, from the target's own log (its newest
/// `apply`/`adopt` record of `g`), with that record's time: `(None, _)` when it replaced
/// nothing; `None` without such a record.
fn replaced(p: &Deployment<'_>, g: GenerationId) -> Result<Option<(Option<GenerationId>, String)>> {
    Ok(records_of(p)?
        .into_iter()
        .rev()
        .find(|r| {
            r.generation == Some(g)
                && matches!(r.action, log::Action::Apply | log::Action::Adopt)
                && r.outcome == Outcome::Applied
        })
        .map(|r| (r.previous_generation, r.time)))
}

fn records_of(p: &Deployment<'_>) -> Result<Vec<log::Record>> {
    let bytes = p
        .target
        .log_read()
        .map_err(|e| p.target_failure(e))?
        .unwrap_or_default();
    Ok(log::records(&bytes))
}

/// `a` is earlier than `b` (RFC 3339 times; one that does not parse is never earlier).
fn earlier(a: &str, b: &str) -> bool {
    match (
        humantime::parse_rfc3339_weak(a),
        humantime::parse_rfc3339_weak(b),
    ) {
        (Ok(a), Ok(b)) => a < b,
        _ => false,
    }
}

/// A rollout ends with its `rollout` record: a journal of a commit whose rollout was recorded
/// after the journal says it started belongs to a rollout that ended (a stale copy, or one
/// forged from it), and nothing it names is undone.
fn ended(parts: &[Part<'_>], journal: &RolloutJournal) -> Result<Option<String>> {
    for p in parts {
        let end = records_of(&p.d)?.into_iter().rev().find(|r| {
            r.action == log::Action::Rollout
                && r.commit == journal.commit
                && !earlier(&r.time, &journal.started)
        });
        if let Some(r) = end {
            return Ok(Some(format!(
                "target `{}`'s log records its end ({}, at {})",
                p.d.member.as_deref().unwrap_or_default(),
                r.outcome.as_str(),
                r.time
            )));
        }
    }
    Ok(None)
}

/// An interrupted rollout (its journal in the first target's state) is undone: every target it
/// changed gets its own journal resolved, then what was live before the rollout back. Returns
/// true when one was found (this run then ends, exit 4).
fn recover(d: &Deployment<'_>, parts: &[Part<'_>], report: &mut RolloutReport) -> Result<bool> {
    let Some((at, mut journal)) = find_journal(parts)? else {
        return Ok(false);
    };
    check_journal_names(d, parts, &journal)?;
    hold_locks(parts)?;
    // Its run recorded the rollout's end and died before removing the journal (or the journal
    // is a copy of an ended one): there is nothing to undo, only the journal to remove.
    if let Some(end) = ended(parts, &journal)? {
        d.say(&format!(
            "Removed the journal of a rollout of commit {} that had already ended: {end}.",
            short(&journal.commit)
        ));
        clear(&parts[at].d);
        return Ok(false);
    }
    let found = format!(
        "Found an interrupted rollout of commit {} by {}@{} (pid {}), started {}, in wave {} of {} ({}); \
         a rollout whose bakes were not all watched is never completed: undoing it",
        short(&journal.commit),
        journal.holder.user,
        journal.holder.host,
        journal.holder.pid,
        journal.started,
        journal.wave.saturating_add(1),
        journal.waves.len(),
        journal.phase
    );
    d.say(&format!("{found}."));
    report.recovered.push(found);
    let changed: Vec<(&Changed, &Part<'_>)> = journal
        .changed
        .iter()
        .filter_map(|c| part(parts, &c.target).map(|p| (c, p)))
        .collect();
    for (_, p) in &changed {
        apply::settle_interrupted(&p.d)?;
    }
    for (c, p) in &changed {
        check_claim(d, &p.d, &journal, c)?;
    }
    journal.phase = "undoing".into();
    let why = "interrupted rollout, undone by the next run".to_owned();
    undo_all(d, parts, at, &journal, report, "recovered", why)?;
    Ok(true)
}

/// The target of `parts` named `name`.
fn part<'p, 'a>(parts: &'p [Part<'a>], name: &str) -> Option<&'p Part<'a>> {
    parts.iter().find(|p| p.d.member.as_deref() == Some(name))
}

/// The first rollout journal in any target's state, with the index of that target. Nothing is
/// read from a target before it proved its owner; every target is looked at, so a journal
/// stays found when the configuration changed which target comes first.
fn find_journal(parts: &[Part<'_>]) -> Result<Option<(usize, RolloutJournal)>> {
    let mut found = None;
    for (i, p) in parts.iter().enumerate() {
        p.d.verify_owner()?;
        if found.is_none() {
            found = read_journal(&p.d)?.map(|j| (i, j));
        }
    }
    Ok(found)
}

/// A journal of this environment and account, naming only targets the configuration has.
fn check_journal_names(
    d: &Deployment<'_>,
    parts: &[Part<'_>],
    journal: &RolloutJournal,
) -> Result<()> {
    if journal.environment != d.env.name || journal.account != d.env.account.value {
        return Err(Failure::refused(format!(
            "the rollout journal belongs to `{}` (account {}), not to {}",
            journal.environment,
            journal.account,
            d.who()
        ))
        .into());
    }
    let Some(gone) = journal
        .changed
        .iter()
        .find(|c| part(parts, &c.target).is_none())
    else {
        return Ok(());
    };
    Err(Failure::refused(format!(
        "an interrupted rollout of `{}` changed target `{}`, which this commit's configuration no longer has, so it cannot be undone from here",
        d.env.name, gone.target
    ))
    .hint(format!(
        "check out the commit that still names `{}` (the rollout's was {}) and run `deploy --target {}` there to undo it; nothing was written",
        gone.target, journal.commit, d.env.name
    ))
    .into())
}
