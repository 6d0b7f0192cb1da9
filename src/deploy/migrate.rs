//! `deploy migrate --target NAME --from DIR`: move an `exec` target's state from a directory on
//! one machine into the shared store its reviewed configuration now names (`[target.state]`
//! of kind `etcd` or `provider`), keeping every generation (ids, metadata, failures, which one
//! is live), the secret key and the log's chain byte for byte.
//!
//! Order, so that a run that dies half-way can simply be run again: prove the owner (the
//! provider's account, the directory's stamp, the identity command); refuse a store that
//! already has a stamp, a directory whose log does not verify or that holds an interrupted
//! deployment; confirm; take both locks; copy; check the copied log is the same bytes; write
//! the stamp (the commit point); mark the directory moved (it then refuses every deployment
//! through it); append a `migrate` record to the new log.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::Deployment;
use super::apply::LogRef;
use crate::error::Failure;
use crate::log::{self, Changes, Entry, Operator, Outcome};
use crate::target::store::{GenerationStore, LogStore, Shared, StateStore};
use crate::target::{DirTarget, Holder, Stamp, StampState, Target};

/// What `deploy migrate` did, for `--format json`.
#[derive(Debug, Serialize)]
pub struct MigrateReport {
    pub ok: bool,
    pub environment: String,
    pub account: String,
    pub from: String,
    pub to: String,
    pub generations: usize,
    pub live: Option<u64>,
    pub records: usize,
    /// The `migrate` record appended to the new log.
    pub log: Option<LogRef>,
}

/// The interrupted-deployment items a directory state may hold.
const EXEC_JOURNAL: &str = "exec-journal.json";
/// The directory's note that its state was moved (`DirTarget::mark_moved`).
const MOVED: &str = "moved.json";
/// The directory's stamp, read directly once the directory is marked moved.
const STAMP: &str = "stamp.json";

pub fn migrate(d: &Deployment<'_>, from: &Path, yes: bool) -> Result<MigrateReport> {
    let to = super::shared_store(d.env, &super::exec_provider(d.env))?;
    d.check_target_account()?;
    // Relative to where the command runs, as any path on the command line.
    let from = std::path::absolute(from).unwrap_or_else(|_| from.to_path_buf());
    let old = DirTarget::new(super::real_target_path(d.env, &from)?);
    let again = format!(
        "deploy migrate --target {} --from {} --yes",
        d.env.name,
        from.display()
    );
    if let Some(report) = finish_interrupted(d, &to, &old, (yes, &again))? {
        return Ok(report);
    }
    refuse_stamped(d, &to)?;
    let stamp = old_stamp(d, &old)?;
    d.check_identity()?;
    refuse_unfinished(d, &old)?;
    let (generations, live) = (
        GenerationStore::generations(&old).map_err(|e| d.target_failure(e))?,
        GenerationStore::live_generation(&old).map_err(|e| d.target_failure(e))?,
    );
    d.say(&format!(
        "Moving the state of {} from {} into {}:\n  {} generation{} (live: {}), the deployment \
         log, the secret key, then the stamp.\nThe directory keeps its copy as a record and \
         refuses deployments through it from then on.",
        d.who(),
        Target::describe(&old),
        to.describe_state(),
        generations.len(),
        if generations.len() == 1 { "" } else { "s" },
        live.map_or("none".to_owned(), |g| g.to_string()),
    ));
    d.ask(
        yes,
        &format!("move the state into {}", to.describe_state()),
        true,
        &again,
    )?;
    let holder = Holder::this_process(&d.env.name);
    let _old_lock = StateStore::lock(&old, &holder).map_err(|e| d.target_failure(e))?;
    let _new_lock = StateStore::lock(&to, &holder).map_err(|e| d.target_failure(e))?;
    let imported = to.import(&old).map_err(|e| d.target_failure(e))?;
    same_log(d, &old, &to)?;
    to.write_stamp(&stamp).map_err(|e| d.target_failure(e))?;
    crate::failpoint::hit("migrate-after-stamp");
    old.mark_moved(&to.describe_state())
        .map_err(|e| d.target_failure(e))?;
    crate::failpoint::hit("migrate-after-moved");
    let mut report = MigrateReport {
        ok: true,
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        from: Target::describe(&old),
        to: to.describe_state(),
        generations: imported.generations,
        live: imported.live,
        records: imported.records,
        log: None,
    };
    report.log = Some(record(d, &report)?);
    d.say(&format!(
        "Moved: {} generations and {} log records of {} are in {}; deploy from any machine with `deploy --target {}`.",
        report.generations,
        report.records,
        d.who(),
        report.to,
        d.env.name
    ));
    Ok(report)
}

/// A migration killed after its commit point (the stamp) and before the directory was marked
/// moved: the store is stamped for this environment and holds exactly the directory's log.
/// Running it again marks the directory moved and appends the `migrate` record, so that the
/// directory never goes on as a second history. `None`: not that case.
fn finish_interrupted(
    d: &Deployment<'_>,
    to: &Shared,
    old: &DirTarget,
    (yes, again): (bool, &str),
) -> Result<Option<MigrateReport>> {
    let StampState::Stamped(stamped) = to.stamp().map_err(|e| d.target_failure(e))? else {
        return Ok(None);
    };
    let Some(moved) = interrupted_at(d, to, old, &stamped)? else {
        return Ok(None);
    };
    d.check_stamp(&stamped)?;
    d.check_identity()?;
    let what = if moved {
        "append its `migrate` record to the new log"
    } else {
        "mark the directory moved"
    };
    d.say(&format!(
        "An earlier `deploy migrate` from {} into {} stopped before it could {what}.",
        Target::describe(old),
        to.describe_state(),
    ));
    d.ask(yes, what, true, again)?;
    let holder = Holder::this_process(&d.env.name);
    let _old_lock = StateStore::lock(old, &holder).map_err(|e| d.target_failure(e))?;
    let _new_lock = StateStore::lock(to, &holder).map_err(|e| d.target_failure(e))?;
    let was = LogStore::log_read(old).map_err(|e| d.target_failure(e))?;
    let now = LogStore::log_read(to).map_err(|e| d.target_failure(e))?;
    let verified = log::verify(was.as_deref().unwrap_or_default());
    if was != now || verified.problem.is_some() {
        return Ok(None);
    }
    let generations = GenerationStore::generations(to).map_err(|e| d.target_failure(e))?;
    if !moved {
        old.mark_moved(&to.describe_state())
            .map_err(|e| d.target_failure(e))?;
    }
    let mut report = MigrateReport {
        ok: true,
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        from: Target::describe(old),
        to: to.describe_state(),
        generations: generations.len(),
        live: GenerationStore::live_generation(to).map_err(|e| d.target_failure(e))?,
        records: verified.records,
        log: None,
    };
    report.log = Some(record(d, &report)?);
    d.say(&format!(
        "Moved: {} is marked moved now; {} generations and {} log records of {} are in {}.",
        report.from,
        report.generations,
        report.records,
        d.who(),
        report.to
    ));
    Ok(Some(report))
}

/// Whether `old` is the directory a migration into `to` (stamped `stamped`) was interrupted
/// from: its stamp is the same owner's and it is not marked moved (`Some(false)`), or marked
/// moved into `to` itself (`Some(true)`: only the record is missing). The logs are compared
/// by the caller, under the locks.
fn interrupted_at(
    d: &Deployment<'_>,
    to: &Shared,
    old: &DirTarget,
    stamped: &Stamp,
) -> Result<Option<bool>> {
    let note = old.read_private(MOVED).map_err(|e| d.target_failure(e))?;
    let stamp = match &note {
        None => match StateStore::stamp(old) {
            Ok(StampState::Stamped(s)) => Some(s),
            _ => None,
        },
        Some(note) => {
            let into = serde_json::from_slice::<serde_json::Value>(note)
                .ok()
                .and_then(|v| Some(v.get("to")?.as_str()? == to.describe_state()));
            let own = old.read_private(STAMP).map_err(|e| d.target_failure(e))?;
            own.filter(|_| into == Some(true))
                .and_then(|bytes| serde_json::from_slice::<Stamp>(&bytes).ok())
        }
    };
    Ok(stamp
        .filter(|s| s.same_owner(stamped))
        .map(|_| note.is_some()))
}

/// A store that already has a stamp is never overwritten.
fn refuse_stamped(d: &Deployment<'_>, to: &Shared) -> Result<()> {
    let StampState::Stamped(s) = to.stamp().map_err(|e| d.target_failure(e))? else {
        return Ok(());
    };
    Err(Failure::refused(format!(
        "{} already has a stamp (environment `{}`, account {}, since {}); refusing to overwrite \
         its state with the directory's",
        to.describe_state(),
        s.environment,
        s.account,
        s.created
    ))
    .hint(format!(
        "the state of `{}` was already moved, or another history lives there: `deploy log \
         --target {}` shows it; nothing was written",
        d.env.name, d.env.name
    ))
    .into())
}

/// The directory's stamp: it must be this environment's.
fn old_stamp(d: &Deployment<'_>, old: &DirTarget) -> Result<Stamp> {
    match StateStore::stamp(old).map_err(|e| d.target_failure(e))? {
        StampState::Stamped(stamp) => {
            d.check_stamp(&stamp)?;
            Ok(stamp)
        }
        _ => Err(Failure::refused(format!(
            "{} holds no envlock stamp: there is no state of `{}` to move",
            Target::describe(old),
            d.env.name
        ))
        .hint("name the directory the environment's `state` used to be (`--from DIR`); nothing was written")
        .into()),
    }
}

/// The directory's log must verify, and no deployment may be half-done in it.
fn refuse_unfinished(d: &Deployment<'_>, old: &DirTarget) -> Result<()> {
    let bytes = LogStore::log_read(old)
        .map_err(|e| d.target_failure(e))?
        .unwrap_or_default();
    let verified = log::verify(&bytes);
    if let Some(problem) = &verified.problem {
        return Err(Failure::refused(format!(
            "the deployment log in {} does not verify: line {}: {}",
            Target::describe(old),
            problem.line,
            problem.message
        ))
        .hint("a damaged log is not carried into a shared store; nothing was written")
        .into());
    }
    let journal = StateStore::read_journal(old).map_err(|e| d.target_failure(e))?;
    let undo = old
        .read_private(EXEC_JOURNAL)
        .map_err(|e| d.target_failure(e))?;
    if journal.is_some() || undo.is_some() {
        return Err(Failure::refused(format!(
            "{} holds an interrupted deployment of `{}`",
            Target::describe(old),
            d.env.name
        ))
        .hint("finish it first: run `deploy --target NAME` once more from the machine and configuration that use this directory, then migrate; nothing was written")
        .into());
    }
    Ok(())
}

/// The copied log must be the directory's, byte for byte (one line per record).
fn same_log(d: &Deployment<'_>, old: &DirTarget, to: &Shared) -> Result<()> {
    let was = LogStore::log_read(old).map_err(|e| d.target_failure(e))?;
    let now = LogStore::log_read(to).map_err(|e| d.target_failure(e))?;
    if was.unwrap_or_default() == now.unwrap_or_default() {
        return Ok(());
    }
    Err(Failure::error(format!(
        "the log copied into {} is not the directory's, byte for byte; the store was not stamped",
        to.describe_state()
    ))
    .hint("run the migration again (it overwrites what it copied); the directory is unchanged")
    .into())
}

/// The `migrate` record, appended to the new log.
fn record(d: &Deployment<'_>, report: &MigrateReport) -> Result<LogRef> {
    let entry = Entry {
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        target: d.target.describe(),
        action: log::Action::Migrate,
        outcome: Outcome::Applied,
        commit: d.commit.id.to_string(),
        config_sha256: crate::plan::settings_sha256(d.env),
        operator: Operator::current(),
        changes: Changes::default(),
        generation: report.live,
        previous_generation: None,
        reason: Some(format!(
            "deploy migrate: state moved from {} into {} ({} generations, {} records)",
            report.from, report.to, report.generations, report.records
        )),
        plan_sha256: None,
        notify: None,
        signing: d.signing.clone(),
        resources: None,
    };
    let r = log::append(&*d.target, entry).map_err(|e| {
        Failure::error(format!(
            "the state was moved, but the `migrate` record could not be appended: {e}"
        ))
    })?;
    Ok(LogRef {
        seq: r.seq,
        hash: r.hash,
    })
}
