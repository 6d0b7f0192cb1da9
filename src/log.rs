//! The deployment log: append-only JSON Lines in the target's state area, one record per
//! attempt that reached the right target, chained by hashes (SPEC section 4).
//!
//! Format (one line per record, fields in this order, no whitespace):
//! `{"seq":1,"time":…,…,"prev":"<64 hex>","hash":"<64 hex>"}`. The record's canonical JSON is
//! its line without the `hash` member; `hash` = SHA-256 of that canonical JSON, which includes
//! `prev`, the previous record's `hash` (64 zeros for the first record). Editing a byte changes
//! the record's hash; dropping, reordering or inserting a record breaks `seq` or `prev`.
//!
//! Invariants: appending reads only the last record (O(1) in the log's length); verifying reads
//! every byte once, a batch of lines at a time (`stream.rs`: memory holds one batch, whatever
//! the log's length), and hashes and checks signatures on all cores; a record is appended only
//! under the target's lock, so the chain never forks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::target::{GenerationId, Target, TargetError};

mod sigs;
mod stream;
pub use stream::{Streamed, verify_log};

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `,"hash":"` + 64 hex + `"}`: how every line ends.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;
/// `,"prev":"` + 64 hex + `"`: what precedes the hash member.
const PREV_LEN: usize = 9 + 64 + 1;

/// What the attempt was.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A deployment of a commit.
    Apply,
    /// The first deployment, which stamped (adopted) the target.
    Adopt,
    /// `deploy rollback`.
    Rollback,
    /// A deployment that found nothing to change and health-checked what is live.
    Verify,
    /// `deploy log seal`: damage a person looked at, set aside; the chain goes on from the
    /// last record that verified (the record's `sealed` says what was set aside).
    Seal,
    /// `deploy migrate`: the state was moved from a directory into a shared store (the
    /// records before it were copied byte for byte).
    Migrate,
    /// A fleet's rollout as a whole (in its first target's log; each target's own records
    /// say what happened to it).
    Rollout,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Apply => "apply",
            Action::Adopt => "adopt",
            Action::Rollback => "rollback",
            Action::Verify => "verify",
            Action::Seal => "seal",
            Action::Migrate => "migrate",
            Action::Rollout => "rollout",
        }
    }
}

/// How it ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The new generation is live and passed its health check (or has none).
    Applied,
    /// Nothing to change, and the live generation passed its health check (or has none).
    Unchanged,
    /// It failed and the previous generation was made live again.
    RolledBack,
    /// It failed without changing what is live.
    Failed,
    /// Refused for safety (stale, promotion gate, saved plan) after the target proved to be
    /// this environment's.
    Refused,
    /// A `seal` record: damage set aside; nothing deployed.
    Sealed,
}

impl Outcome {
    /// Every outcome, in the order the README lists them (`deploy log --outcome`).
    pub const ALL: [Outcome; 6] = [
        Outcome::Applied,
        Outcome::Unchanged,
        Outcome::RolledBack,
        Outcome::Failed,
        Outcome::Refused,
        Outcome::Sealed,
    ];

    /// The outcome spelled `s` as in the log (`rolled-back`), if there is one.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Sealed => "sealed",
        }
    }

    /// True for the outcomes that prove a commit live and healthy (the promotion gate).
    pub fn proves_healthy(self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Unchanged)
    }
}

/// Who ran it: the OS user and host, plus the CI system's identity when present.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub user: String,
    pub host: String,
    /// CI identity variables (GitHub Actions, GitLab CI, Jenkins, Buildkite), when set.
    pub ci: BTreeMap<String, String>,
}

/// The CI identity variables recorded with each record, per CI system (the first variable
/// says which system it is).
const CI_VARIABLES: &[&[&str]] = &[
    &[
        "GITHUB_ACTIONS",
        "GITHUB_ACTOR",
        "GITHUB_TRIGGERING_ACTOR",
        "GITHUB_REPOSITORY",
        "GITHUB_WORKFLOW",
        "GITHUB_RUN_ID",
        "GITHUB_RUN_ATTEMPT",
        "GITHUB_REF",
        "GITHUB_SHA",
        "GITHUB_SERVER_URL",
    ],
    &[
        "GITLAB_CI",
        "GITLAB_USER_LOGIN",
        "CI_PROJECT_PATH",
        "CI_PIPELINE_ID",
        "CI_JOB_ID",
        "CI_JOB_URL",
        "CI_COMMIT_REF_NAME",
        "CI_COMMIT_SHA",
    ],
    &["JENKINS_URL", "BUILD_URL", "JOB_NAME", "BUILD_NUMBER"],
    &[
        "BUILDKITE",
        "BUILDKITE_BUILD_URL",
        "BUILDKITE_BUILD_CREATOR",
        "BUILDKITE_PIPELINE_SLUG",
        "BUILDKITE_BUILD_NUMBER",
    ],
];

impl Operator {
    /// This process's operator.
    pub fn current() -> Self {
        let h = crate::target::Holder::this_process("");
        let mut ci = BTreeMap::new();
        for system in CI_VARIABLES {
            if crate::sysenv::var(system[0]).is_some_and(|v| !v.is_empty()) {
                for name in *system {
                    if let Some(v) = crate::sysenv::var(name).filter(|v| !v.is_empty()) {
                        ci.insert((*name).to_owned(), v);
                    }
                }
            }
        }
        Operator {
            user: h.user,
            host: h.host,
            ci,
        }
    }

    /// `user@host`, plus the CI actor when there is one.
    pub fn display(&self) -> String {
        let actor = [
            "GITHUB_ACTOR",
            "GITLAB_USER_LOGIN",
            "BUILDKITE_BUILD_CREATOR",
        ]
        .iter()
        .find_map(|k| self.ci.get(*k));
        match actor {
            Some(a) => format!("{}@{} (ci: {a})", self.user, self.host),
            None if !self.ci.is_empty() => format!("{}@{} (ci)", self.user, self.host),
            None => format!("{}@{}", self.user, self.host),
        }
    }
}

/// Resources added, changed and removed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    pub add: usize,
    pub change: usize,
    pub remove: usize,
}

/// One record of the log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    /// UTC, RFC 3339.
    pub time: String,
    pub environment: String,
    pub account: String,
    /// The target, as `deploy envs` describes it.
    pub target: String,
    pub action: Action,
    pub outcome: Outcome,
    /// The commit whose configuration was deployed (for a rollback: the commit of the
    /// generation made live).
    pub commit: String,
    /// SHA-256 of the canonical resolved settings that were deployed.
    pub config_sha256: String,
    pub operator: Operator,
    pub changes: Changes,
    /// The generation live when the attempt ended.
    pub generation: Option<GenerationId>,
    /// The generation live before it.
    pub previous_generation: Option<GenerationId>,
    /// Why it failed, was refused or rolled back; what a recovery found.
    pub reason: Option<String>,
    /// The checksum of the saved plan applied (`deploy apply --plan`), if any.
    pub plan_sha256: Option<String>,
    /// What became of the notification envlock delivers itself (`[notify] url`), when one is
    /// configured and was sent for this record. Added after the first release: absent from
    /// older records (and from records without one), never `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notified>,
    /// Only in a `seal` record: the damage it sets aside. Absent from every other record, so
    /// records written before seals existed hash and verify as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Sealed>,
    /// The names (never the values) of the resources added, changed and removed; absent when
    /// nothing changed, and from records written before it existed (which hash as they did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// In a signed record whose `commit` is not the commit the deployment ran from (a
    /// rollback, a recovery, a seal): the commit whose `allowed_signers` allowed the signer,
    /// which verification then reads instead of `commit`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signers_commit: Option<String>,
    pub prev: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    /// The `SHA256:…` fingerprint of the key that signed `hash` (outside what `hash` covers,
    /// like `hash` itself; absent from unsigned records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The armored SSHSIG signature of `hash` (namespace `envlock-log@<environment>`), as
    /// `ssh-keygen -Y sign` writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The names of the resources an attempt added, changed and removed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub add: Vec<String>,
    pub change: Vec<String>,
    pub remove: Vec<String>,
}

impl Resources {
    /// The names in a plan's changes; `None` when nothing changes.
    pub fn of(changes: &[crate::plan::Change]) -> Option<Self> {
        use crate::plan::Action as A;
        let names = |a: A| -> Vec<String> {
            changes
                .iter()
                .filter(|c| c.action == a)
                .map(|c| c.resource.clone())
                .collect()
        };
        let r = Resources {
            add: names(A::Add),
            change: names(A::Change),
            remove: names(A::Remove),
        };
        (!changes.is_empty()).then_some(r)
    }
}

/// What a `seal` record says about the damage it sets aside: the lines from `line` up to the
/// seal itself, which stay in the log byte for byte.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// 1-based line of the first record that did not verify.
    pub line: usize,
    /// That record's `seq` as written, when it could be read.
    pub seq: Option<u64>,
    pub kind: Broken,
    /// Why it did not verify, as `deploy log verify` said.
    pub problem: String,
    /// Records that verified before it.
    pub records: usize,
    /// The hash of the last record that verified (the old head): the seal's `prev`.
    pub head: String,
    /// How many bytes are set aside (from the start of `line` to the seal's own line).
    pub damaged_bytes: u64,
    /// SHA-256 of those bytes: a later change to them is damage again.
    pub damaged_sha256: String,
}

/// What the caller knows about an attempt; [`append`] adds the sequence, time and chain.
#[derive(Clone, Debug)]
pub struct Entry {
    pub environment: String,
    pub account: String,
    pub target: String,
    pub action: Action,
    pub outcome: Outcome,
    pub commit: String,
    pub config_sha256: String,
    pub operator: Operator,
    pub changes: Changes,
    pub generation: Option<GenerationId>,
    pub previous_generation: Option<GenerationId>,
    pub reason: Option<String>,
    pub plan_sha256: Option<String>,
    pub notify: Option<Notified>,
    /// The key that signs the record (`allowed_signers` exists at the deployed commit).
    pub signing: Option<std::sync::Arc<crate::signing::Key>>,
    /// The names of the resources changed, when known.
    pub resources: Option<Resources>,
}

/// The delivery of one `[notify] url` notification, as the log records it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Notified {
    /// `pagerduty`, `cloudevents` or `alertmanager`.
    pub format: String,
    pub delivered: bool,
    /// HTTP requests tried, retries included.
    pub attempts: u32,
    /// Why it was not delivered (never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a record could not be appended.
#[derive(thiserror::Error, Debug)]
pub enum AppendError {
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The log ends in an incomplete record; only the recovery of an interrupted deployment
    /// may cut it (see [`cut_incomplete_tail`]).
    #[error(
        "the deployment log ends with an incomplete record ({0} bytes after the last complete one)"
    )]
    IncompleteTail(usize),
    /// The last record is not in the format this build writes.
    #[error("the last record of the deployment log cannot be read: {0}")]
    Unreadable(String),
    /// The signing key did not sign (the agent refused, the key went away).
    #[error("the record could not be signed: {0}")]
    Unsigned(String),
}

/// The `seq` and `hash` of the last complete record (`(0, GENESIS)` for an empty log).
fn head(target: &dyn Target) -> Result<(u64, String), AppendError> {
    let tail = target.log_tail()?;
    if tail.incomplete > 0 {
        return Err(AppendError::IncompleteTail(tail.incomplete));
    }
    let Some(last) = tail.last else {
        return Ok((0, GENESIS.to_owned()));
    };
    let parts = split_line(&last).map_err(|e| AppendError::Unreadable(e.to_owned()))?;
    let seq = parts.seq.ok_or_else(|| {
        AppendError::Unreadable("it does not start with a sequence number".into())
    })?;
    Ok((seq, String::from_utf8_lossy(parts.hash).into_owned()))
}

/// The sequence number of the last complete record (0 for an empty or absent log).
pub fn last_seq(target: &dyn Target) -> Result<u64, AppendError> {
    head(target).map(|(seq, _)| seq)
}

/// The last complete record, parsed.
pub fn last_record(target: &dyn Target) -> Result<Option<Record>, TargetError> {
    let tail = target.log_tail()?;
    Ok(tail.last.and_then(|l| serde_json::from_slice(&l).ok()))
}

/// Append one record durably. The caller holds the target's lock.
pub fn append(target: &dyn Target, entry: Entry) -> Result<Record, AppendError> {
    append_with(target, entry, false)
}

/// [`append`], and remove the crash journal in the same atomic step where the target can
/// (see `Target::log_append_clear_journal`).
pub fn append_clearing_journal(target: &dyn Target, entry: Entry) -> Result<Record, AppendError> {
    append_with(target, entry, true)
}

fn append_with(target: &dyn Target, entry: Entry, clear: bool) -> Result<Record, AppendError> {
    let (seq, prev) = head(target)?;
    let record = Record {
        seq: seq + 1,
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        environment: entry.environment,
        account: entry.account,
        target: entry.target,
        action: entry.action,
        outcome: entry.outcome,
        commit: entry.commit,
        config_sha256: entry.config_sha256,
        operator: entry.operator,
        changes: entry.changes,
        generation: entry.generation,
        previous_generation: entry.previous_generation,
        reason: entry.reason,
        plan_sha256: entry.plan_sha256,
        notify: entry.notify,
        sealed: None,
        resources: entry.resources,
        signers_commit: None,
        prev,
        hash: String::new(),
        signer: None,
        signature: None,
    };
    // A reason may quote what a command printed: no secret value enters the log.
    let (line, record) = seal_signed(crate::redact::scrubbed(record), entry.signing.as_deref())
        .map_err(AppendError::Unsigned)?;
    if clear {
        target.log_append_clear_journal(&line)?;
    } else {
        target.log_append(&line)?;
    }
    Ok(record)
}

/// Compute `hash` and the line to store (with its newline), unsigned.
pub fn seal(record: Record) -> (Vec<u8>, Record) {
    seal_signed(record, None).unwrap_or_else(|_| unreachable!("no key, nothing to sign"))
}

/// Compute `hash`, sign it with `key` when there is one, and the line to store: the canonical
/// JSON (without `hash`, `signer`, `signature`) with `,"hash":"…"` and then
/// `,"signer":"SHA256:…","signature":"…"` spliced in before its closing brace.
pub fn seal_signed(
    mut record: Record,
    key: Option<&crate::signing::Key>,
) -> Result<(Vec<u8>, Record), String> {
    record.hash.clear();
    record.signer = None;
    record.signature = None;
    record.signers_commit = key
        .map(crate::signing::Key::commit)
        .filter(|c| !c.is_empty() && *c != record.commit)
        .map(str::to_owned);
    let canonical = serde_json::to_vec(&record).expect("a record serializes");
    let hash = crate::target::sha256_hex(&canonical);
    let mut line = canonical;
    line.pop(); // the closing brace
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.push(b'"');
    if let Some(key) = key {
        let signature = key.sign(&record.environment, &hash)?;
        line.extend_from_slice(b",\"signer\":");
        line.extend(serde_json::to_vec(key.fingerprint()).expect("a string serializes"));
        line.extend_from_slice(b",\"signature\":");
        line.extend(serde_json::to_vec(&signature).expect("a string serializes"));
        record.signer = Some(key.fingerprint().to_owned());
        record.signature = Some(signature);
    }
    line.extend_from_slice(b"}\n");
    record.hash = hash;
    Ok((line, record))
}

/// Cut an incomplete last record: only for the recovery of an interrupted deployment, whose
/// journal proves that a record was being written when it died. Returns the bytes cut.
pub fn cut_incomplete_tail(target: &dyn Target) -> Result<usize, TargetError> {
    let tail = target.log_tail()?;
    if tail.incomplete == 0 {
        return Ok(0);
    }
    target.log_cut(tail.complete_len)?;
    Ok(tail.incomplete)
}

/// Before a deployment appends: the log's first problem, if it does not verify. Cheap when the
/// target can tell that nobody wrote the log since its last append (`LogStore::log_untouched`:
/// a `dir` log's `fstat` against the checkpoint of that append); otherwise the whole log is
/// read and verified once.
pub fn damage(target: &dyn Target) -> Result<Option<Verified>, TargetError> {
    if target.log_untouched()? {
        return Ok(None);
    }
    let removed = target.log_removed()?;
    let reader = target.log_open()?;
    if reader.is_none() && removed.is_none() {
        return Ok(None);
    }
    let reader = reader.unwrap_or_else(|| Box::new(std::io::empty()));
    let s = stream::verify_batched(reader, stream::batch_bytes(), None).map_err(read_error)?;
    let mut v = s.verified;
    removed_problem(&mut v, s.newlines, removed);
    Ok(v.problem.is_some().then_some(v))
}

/// A read of the log that failed half-way.
pub fn read_error(source: std::io::Error) -> TargetError {
    TargetError::Io {
        what: "read".into(),
        path: "the deployment log".into(),
        source,
    }
}

/// [`verify`], and when the chain verifies but the target knows that records at its end were
/// removed (`LogStore::log_removed`: a log only grows, and a chain cut after a record still
/// verifies), that is its problem: `dropped`, at the line after the last record.
pub fn verify_removed(bytes: &[u8], removed: Option<String>) -> Verified {
    let mut v = verify(bytes);
    let lines = bytes.iter().filter(|&&b| b == b'\n').count();
    removed_problem(&mut v, lines, removed);
    v
}

/// When `v` verifies but records at its end were `removed`: that, after its `lines` lines.
pub fn removed_problem(v: &mut Verified, lines: usize, removed: Option<String>) {
    if let (None, Some(what)) = (&v.problem, removed) {
        v.problem = Some(Problem {
            line: lines + 1,
            seq: None,
            kind: Broken::Dropped,
            message: format!("records at the end of the log were removed: {what}"),
        });
    }
}

/// The parts of a line that verification needs, found without parsing JSON.
struct Parts<'a> {
    seq: Option<u64>,
    /// The canonical JSON without its closing brace.
    body: &'a [u8],
    prev: &'a [u8],
    hash: &'a [u8],
}

fn is_hex64(b: &[u8]) -> bool {
    b.len() == 64
        && b.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// `,"signer":"SHA256:` + 43 base64 + `"`.
const SIGNER_LEN: usize = 11 + 7 + 43 + 1;

/// Where a signed record's `,"signer":…,"signature":"…"` starts. The signature's armor holds
/// no `"`, so its value starts after the line's last quote but one.
fn signed_tail(line: &[u8]) -> Option<usize> {
    const SIG: &[u8] = b",\"signature\":\"";
    let n = line.len();
    let inner = line.get(..n.checked_sub(2)?)?;
    let open = inner.iter().rposition(|&b| b == b'"')?;
    let sig_at = (open + 1).checked_sub(SIG.len())?;
    if &line[sig_at..=open] != SIG {
        return None;
    }
    let signer_at = sig_at.checked_sub(SIGNER_LEN)?;
    let member = &line[signer_at..sig_at];
    if !member.starts_with(b",\"signer\":\"SHA256:") || !member.ends_with(b"\"") {
        return None;
    }
    Some(signer_at)
}

fn split_line(line: &[u8]) -> Result<Parts<'_>, &'static str> {
    let n = line.len();
    if n < HASH_SUFFIX_LEN + PREV_LEN + 2 || !line.starts_with(b"{") || !line.ends_with(b"\"}") {
        return Err("it is not a record");
    }
    let end = signed_tail(line).map_or(n, |at| at + 1);
    // The hash member ends where the signature members (or the closing brace) begin.
    let Some(start) = end.checked_sub(HASH_SUFFIX_LEN) else {
        return Err("it does not end with its hash");
    };
    let suffix = &line[start..end];
    if start < PREV_LEN + 1 || !suffix.starts_with(b",\"hash\":\"") || suffix[9 + 64] != b'"' {
        return Err("it does not end with its hash");
    }
    let hash = &suffix[9..9 + 64];
    let body = &line[..start];
    let prev_member = &body[body.len() - PREV_LEN..];
    if !prev_member.starts_with(b",\"prev\":\"") || !prev_member.ends_with(b"\"") {
        return Err("it has no `prev` before its hash");
    }
    let prev = &prev_member[9..9 + 64];
    if !is_hex64(hash) || !is_hex64(prev) {
        return Err("its `prev` or `hash` is not 64 lowercase hex digits");
    }
    Ok(Parts {
        seq: leading_seq(line),
        body,
        prev,
        hash,
    })
}

/// The `seq` a line starts with (`{"seq":N,`), if it does.
fn leading_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..n]).ok()?.parse().ok()
}

/// Why a log does not verify.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Broken {
    /// A record's content does not match its hash.
    Edited,
    /// A record is missing: the sequence jumps.
    Dropped,
    /// Records are out of order.
    Reordered,
    /// A record's `prev` is not the previous record's hash (inserted or forged).
    Forged,
    /// The log ends in the middle of a record.
    Truncated,
    /// A line that is not a record at all.
    Malformed,
    /// A record without a signature although `allowed_signers` was in force.
    Unsigned,
    /// A signature that does not verify: unknown key, a key not allowed for the environment,
    /// or a signature that does not match.
    Signature,
}

impl Broken {
    pub fn as_str(&self) -> &'static str {
        match self {
            Broken::Edited => "edited",
            Broken::Dropped => "dropped",
            Broken::Reordered => "reordered",
            Broken::Forged => "forged",
            Broken::Truncated => "truncated",
            Broken::Malformed => "malformed",
            Broken::Unsigned => "unsigned",
            Broken::Signature => "signature",
        }
    }
}

/// The first record that does not verify.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the log file.
    pub line: usize,
    /// The record's `seq` as written, when it can be read.
    pub seq: Option<u64>,
    pub kind: Broken,
    pub message: String,
}

/// The result of verifying a whole log.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Records that verify (all of them when `problem` is `None`), seals included.
    pub records: usize,
    /// The hash of the last record that verifies (`GENESIS` for an empty log).
    pub head: String,
    pub problem: Option<Problem>,
    /// Damage set aside by `seal` records, oldest first: the log verifies around it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sealed: Vec<SealedDamage>,
}

/// Damage that a `seal` record set aside: lines `line` to `seal_line - 1` stay in the log as
/// they were and are not part of the chain.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SealedDamage {
    /// 1-based line of the first record that did not verify.
    pub line: usize,
    /// The line of the `seal` record, and its `seq`.
    pub seal_line: usize,
    pub seal_seq: u64,
    pub kind: Broken,
    /// Why the first record did not verify.
    pub problem: String,
    /// Who sealed it, when, and why.
    pub operator: String,
    pub time: String,
    pub reason: String,
}

/// One line checked on its own: its `seq` and whether its hash matches, or why it is not a
/// record.
type LineCheck = Result<(Option<u64>, bool), &'static str>;

/// Records hashed per task when verifying on several cores.
const VERIFY_CHUNK: usize = 4096;

/// The log split into lines (for a seal: where the damage starts, whether the log was cut).
struct Lines<'a> {
    bytes: &'a [u8],
    lines: Vec<&'a [u8]>,
    /// False when the last line has no newline (a cut log).
    complete_last: bool,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let complete_last = bytes.last().is_none_or(|&b| b == b'\n');
        if complete_last {
            lines.pop(); // the empty string after the final newline
        }
        Lines {
            bytes,
            lines,
            complete_last,
        }
    }

    /// Where line `i` (0-based) starts in the log.
    fn offset(&self, i: usize) -> usize {
        self.lines.get(i).map_or(self.bytes.len(), |l| {
            l.as_ptr() as usize - self.bytes.as_ptr() as usize
        })
    }
}

/// A line's `seq` and whether its hash matches.
fn check_one(line: &[u8]) -> LineCheck {
    let parts = split_line(line)?;
    let mut h = Sha256::new();
    h.update(parts.body);
    h.update(b"}");
    let hash_ok = hex_eq(&h.finalize(), parts.hash);
    // A line that verifies is a whole record, as `deploy log` reads it: chain fields at the
    // right offsets around anything else are not enough.
    if hash_ok && !is_record(line, parts.seq) {
        return Err(
            "it is not a well-formed record (its JSON does not parse into the fields of a record)",
        );
    }
    Ok((parts.seq, hash_ok))
}

/// Check the whole chain. Reads every byte once; hashes lines on all cores, a batch at a time
/// (`stream.rs`). A record that does not verify is set aside only by a later `seal` record that
/// names it, chains to the last good record and holds the SHA-256 of exactly the bytes in
/// between.
pub fn verify(bytes: &[u8]) -> Verified {
    stream::verify_batched(bytes, stream::batch_bytes(), None)
        .expect("reading from memory does not fail")
        .verified
}

/// The `seal` record that sets aside a log's first damage, and the bytes to append (a newline
/// first when the log ends in the middle of a line: no byte is rewritten or removed). `None`
/// when the log verifies (and no record was removed from its end: `removed`); an error when the
/// key did not sign.
#[allow(clippy::type_complexity)]
pub fn seal_for(
    bytes: &[u8],
    removed: Option<String>,
    entry: Entry,
) -> Option<Result<(Vec<u8>, Record, Verified), String>> {
    let v = verify_removed(bytes, removed);
    let problem = v.problem.clone()?;
    let lines = Lines::new(bytes);
    let cut = !lines.complete_last;
    let mut damaged = bytes[lines.offset(problem.line - 1)..].to_vec();
    if cut {
        damaged.push(b'\n');
    }
    // After every `seq` written so far and every line, so that the seal sorts last (an etcd
    // log's keys are its `seq`s).
    let highest = lines
        .lines
        .iter()
        .filter_map(|l| leading_seq(l))
        .max()
        .unwrap_or(0);
    let seq = highest.max(lines.lines.len() as u64).saturating_add(1);
    let record = Record {
        seq,
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        environment: entry.environment,
        account: entry.account,
        target: entry.target,
        action: Action::Seal,
        outcome: Outcome::Sealed,
        commit: entry.commit,
        config_sha256: entry.config_sha256,
        operator: entry.operator,
        changes: Changes::default(),
        generation: entry.generation,
        previous_generation: entry.previous_generation,
        reason: entry.reason,
        plan_sha256: None,
        notify: None,
        sealed: Some(Sealed {
            line: problem.line,
            seq: problem.seq,
            kind: problem.kind,
            problem: problem.message,
            records: v.records,
            head: v.head.clone(),
            damaged_bytes: damaged.len() as u64,
            damaged_sha256: crate::target::sha256_hex(&damaged),
        }),
        resources: None,
        signers_commit: None,
        prev: v.head.clone(),
        hash: String::new(),
        signer: None,
        signature: None,
    };
    let (line, record) =
        match seal_signed(crate::redact::scrubbed(record), entry.signing.as_deref()) {
            Ok(sealed) => sealed,
            Err(e) => return Some(Err(e)),
        };
    let mut out = if cut { b"\n".to_vec() } else { Vec::new() };
    out.extend(line);
    Some(Ok((out, record, v)))
}

/// The records of a log that verified as `v` says, without the lines a seal set aside (the
/// promotion gate trusts only these).
pub fn trusted_records(bytes: &[u8], v: &Verified) -> Vec<Record> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(i, _)| {
            !v.sealed
                .iter()
                .any(|s| (s.line..s.seal_line).contains(&(i + 1)))
        })
        .filter(|(_, l)| !l.is_empty())
        .filter_map(|(_, l)| serde_json::from_slice(l).ok())
        .collect()
}

/// True when `line` parses into a [`Record`] whose `seq` is the one it starts with.
fn is_record(line: &[u8], seq: Option<u64>) -> bool {
    serde_json::from_slice::<Record>(line).is_ok_and(|r| Some(r.seq) == seq)
}

fn hex_eq(digest: &[u8], hex: &[u8]) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    digest.len() * 2 == hex.len()
        && digest.iter().enumerate().all(|(i, b)| {
            hex[2 * i] == HEX[usize::from(b >> 4)] && hex[2 * i + 1] == HEX[usize::from(b & 0xf)]
        })
}

/// `allowed_signers` as of one commit.
#[derive(Clone, Debug)]
pub enum Policy {
    /// The commit has no `allowed_signers`.
    Absent,
    Present(std::sync::Arc<crate::signing::AllowedSigners>),
    /// The commit's file does not parse, or the commit id is not one.
    Unreadable(String),
    /// The commit is not in this repository (not fetched): a problem once records are signed.
    Missing(String),
}

/// The signatures of a log whose chain verified (up to its first problem).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signatures {
    /// Records checked, and how many of them are signed.
    pub records: usize,
    pub signed: usize,
    /// Whether any record was judged under an `allowed_signers` file.
    pub enforced: bool,
    /// The first record whose signature does not verify.
    pub problem: Option<Problem>,
}

/// What a record says about its signature.
#[derive(Deserialize)]
struct SignedView {
    seq: u64,
    commit: String,
    #[serde(default)]
    signers_commit: Option<String>,
    #[serde(default)]
    signer: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    hash: String,
}

/// Check the signatures of the records `v` verified (lines a seal set aside excluded): each
/// against `allowed_signers` as of the commit it names (`policy`, asked once per commit); a
/// record whose commit has no file is judged by the file of the latest earlier record that had
/// one. Once a file is in force, an unsigned record is a problem. Signatures are checked on all
/// cores.
pub fn verify_signatures(
    bytes: &[u8],
    v: &Verified,
    environment: &str,
    policy: &mut dyn FnMut(&str) -> Policy,
) -> Signatures {
    let last = v.problem.as_ref().map_or(usize::MAX, |p| p.line);
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(n, l)| *n < last && !l.is_empty())
        .filter(|(n, _)| !v.sealed.iter().any(|s| (s.line..s.seal_line).contains(n)))
        .collect();
    let mut pass = sigs::SigPass::new(environment, policy);
    for batch in lines.chunks(VERIFY_CHUNK * 16) {
        pass.batch(batch);
    }
    pass.finish()
}

fn signature_problem(line: usize, view: &SignedView, kind: Broken, why: String) -> Problem {
    Problem {
        line,
        seq: Some(view.seq),
        message: format!("record {} (line {line}): {why}", view.seq),
        kind,
    }
}

/// One record's signature, judged by `allowed` (the file in force), or only checked as a
/// signature when no file is in force.
fn check_signature(
    line: usize,
    view: &SignedView,
    environment: &str,
    allowed: Option<&crate::signing::AllowedSigners>,
) -> Option<Problem> {
    let commit = view.signers_commit.as_ref().unwrap_or(&view.commit);
    let short: String = commit.chars().take(12).collect();
    let (signer, signature) = match (&view.signer, &view.signature, allowed) {
        (Some(s), Some(sig), _) => (s, sig),
        (_, _, None) => return None,
        (_, _, Some(_)) => {
            return Some(signature_problem(
                line,
                view,
                Broken::Unsigned,
                format!(
                    "it is not signed, although {} was in force at commit {short} (every record must be signed once the file exists)",
                    crate::signing::ALLOWED_SIGNERS
                ),
            ));
        }
    };
    let result = match allowed {
        Some(a) => crate::signing::verify(a, environment, view.hash.as_bytes(), signer, signature)
            .map(|_| ())
            .map_err(|e| format!("{e} at commit {short}")),
        None => {
            crate::signing::verify_unlisted(environment, view.hash.as_bytes(), signer, signature)
        }
    };
    result
        .err()
        .map(|why| signature_problem(line, view, Broken::Signature, why))
}

/// Every complete record that parses, with its 1-based line in the log, oldest first (the
/// auditor's view tells each record's verification by its line).
pub fn numbered_records(bytes: &[u8]) -> Vec<(usize, Record)> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .filter_map(|(i, l)| Some((i + 1, serde_json::from_slice(l).ok()?)))
        .collect()
}

/// Parse every complete record (for display), oldest first. Lines that do not parse are
/// skipped; `verify` is what judges them.
pub fn records(bytes: &[u8]) -> Vec<Record> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, prev: &str) -> Record {
        Record {
            seq,
            time: "2026-11-21T00:00:00Z".into(),
            environment: "prod".into(),
            account: "222222222222".into(),
            target: "dir /srv/asr".into(),
            action: Action::Apply,
            outcome: Outcome::Applied,
            commit: "c".repeat(40),
            config_sha256: "d".repeat(64),
            operator: Operator {
                user: "ana".into(),
                host: "box".into(),
                ci: BTreeMap::new(),
            },
            changes: Changes::default(),
            generation: Some(seq),
            previous_generation: None,
            reason: None,
            plan_sha256: None,
            notify: None,
            sealed: None,
            resources: None,
            signers_commit: None,
            prev: prev.into(),
            hash: String::new(),
            signer: None,
            signature: None,
        }
    }

    pub(super) fn log(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_owned();
        for seq in 1..=n {
            let (line, r) = seal(record(seq, &prev));
            out.extend(line);
            prev = r.hash;
        }
        out
    }

    /// A test-only key (ssh-keygen -t ed25519 -N ''), and its allowed_signers line for `prod`.
    const TEST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACCtr+ozKFw1htJXOkeYjRG36LQ+/O6BG4BhEbEbsiN/SQAAAIjdOQe23TkH
tgAAAAtzc2gtZWQyNTUxOQAAACCtr+ozKFw1htJXOkeYjRG36LQ+/O6BG4BhEbEbsiN/SQ
AAAECriC+nqUk+HPrOSkSYlxBJTc3SSOz9uaKetDy1sssQpa2v6jMoXDWG0lc6R5iNEbfo
tD787oEbgGERsRuyI39JAAAAAXQBAgME
-----END OPENSSH PRIVATE KEY-----
";
    pub(super) fn test_signers() -> &'static str {
        TEST_SIGNERS
    }

    const TEST_SIGNERS: &str = "t namespaces=\"envlock-log@prod\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK2v6jMoXDWG0lc6R5iNEbfotD787oEbgGERsRuyI39J";

    pub(super) fn signed_log(n: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, TEST_KEY).unwrap();
        let key = crate::signing::from_file(&path).unwrap();
        let mut out = Vec::new();
        let mut prev = GENESIS.to_owned();
        for seq in 1..=n {
            let (line, r) = seal_signed(record(seq, &prev), Some(&key)).unwrap();
            out.extend(line);
            prev = r.hash;
        }
        out
    }

    fn check_signatures(bytes: &[u8]) -> Signatures {
        let allowed =
            std::sync::Arc::new(crate::signing::AllowedSigners::parse(TEST_SIGNERS).unwrap());
        let v = verify(bytes);
        verify_signatures(bytes, &v, "prod", &mut |_| Policy::Present(allowed.clone()))
    }

    #[test]
    fn a_signed_log_verifies_and_its_unsigned_bytes_hash_as_before() {
        let bytes = signed_log(3);
        let v = verify(&bytes);
        assert_eq!((v.problem.clone(), v.records), (None, 3));
        let s = check_signatures(&bytes);
        assert_eq!((s.problem, s.signed, s.enforced), (None, 3, true));
        // The same records unsigned hash the same: the signature is outside the hash.
        assert_eq!(v.head, verify(&log(3)).head);
        let parsed = records(&bytes);
        assert!(
            parsed[0]
                .signature
                .as_deref()
                .unwrap()
                .starts_with("-----BEGIN SSH SIGNATURE-----\n")
        );
        // Another environment's namespace does not verify.
        let allowed =
            std::sync::Arc::new(crate::signing::AllowedSigners::parse(TEST_SIGNERS).unwrap());
        let other = verify_signatures(&bytes, &v, "staging", &mut |_| {
            Policy::Present(allowed.clone())
        });
        assert_eq!(other.problem.unwrap().kind, Broken::Signature);
    }

    #[test]
    fn a_changed_signature_byte_is_found_and_no_prefix_of_a_signed_line_panics() {
        let bytes = signed_log(2);
        let mark = b"\"signature\":\"-----BEGIN SSH SIGNATURE-----\\n";
        let at = bytes.windows(mark.len()).rposition(|w| w == mark).unwrap() + mark.len() + 100;
        let mut edited = bytes.clone();
        edited[at] = if edited[at] == b'A' { b'B' } else { b'A' };
        let s = check_signatures(&edited);
        let p = s.problem.unwrap();
        assert_eq!((p.kind, p.line), (Broken::Signature, 2));
        let first = bytes.split(|&b| b == b'\n').next().unwrap();
        for cut in 0..first.len() {
            let mut line = first[..cut].to_vec();
            line.push(b'\n');
            let _ = check_signatures(&line);
            let mut tail = first[cut..].to_vec();
            tail.push(b'\n');
            let _ = check_signatures(&tail);
        }
    }

    #[test]
    fn a_sealed_line_parses_back_and_hashes_its_canonical_form() {
        let (line, r) = seal(record(1, GENESIS));
        let back: Record = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
        let mut canonical = r.clone();
        canonical.hash.clear();
        assert_eq!(
            r.hash,
            crate::target::sha256_hex(&serde_json::to_vec(&canonical).unwrap())
        );
        assert!(line.starts_with(b"{\"seq\":1,"));
    }

    #[test]
    fn an_intact_log_verifies() {
        let v = verify(&log(10_000));
        assert_eq!(v.problem, None);
        assert_eq!(v.records, 10_000);
        assert_eq!(verify(b"").records, 0);
    }

    /// A line with a correct hash over its own bytes and the chain fields where `verify`
    /// finds them, but not a record: the hash is recomputed, as a forger would.
    fn forged_line(body: &str, prev: &str) -> Vec<u8> {
        let canonical = format!("{body},\"prev\":\"{prev}\"}}");
        let hash = crate::target::sha256_hex(canonical.as_bytes());
        format!("{body},\"prev\":\"{prev}\",\"hash\":\"{hash}\"}}\n").into_bytes()
    }

    #[test]
    fn a_line_that_is_not_a_whole_record_does_not_verify() {
        let good = log(2);
        let head = verify(&good).head;
        for body in [
            // Not JSON at all.
            "{\"seq\":3, this is not json",
            // JSON, but the record's fields were removed.
            "{\"seq\":3",
            // An unknown field.
            "{\"seq\":3,\"nope\":1",
        ] {
            let mut bytes = good.clone();
            bytes.extend(forged_line(body, &head));
            let v = verify(&bytes);
            let p = v
                .problem
                .as_ref()
                .unwrap_or_else(|| panic!("{body} verified"));
            assert_eq!(
                (p.kind.clone(), p.line, v.records),
                (Broken::Malformed, 3, 2),
                "{body}"
            );
            assert_eq!(records(&bytes).len(), 2);
        }
    }

    #[test]
    fn an_edited_byte_is_found() {
        let mut bytes = log(5);
        let at = bytes
            .windows(6)
            .enumerate()
            .filter(|(_, w)| w == b"\"ana\",")
            .nth(2)
            .unwrap()
            .0;
        bytes[at + 1] = b'b';
        let p = verify(&bytes).problem.unwrap();
        assert_eq!((p.kind, p.seq, p.line), (Broken::Edited, Some(3), 3));
    }

    pub(super) fn seal_entry() -> Entry {
        Entry {
            environment: "prod".into(),
            account: "222222222222".into(),
            target: "dir /srv/asr".into(),
            action: Action::Seal,
            outcome: Outcome::Sealed,
            commit: String::new(),
            config_sha256: String::new(),
            operator: Operator::default(),
            changes: Changes::default(),
            generation: Some(5),
            previous_generation: Some(5),
            reason: Some("looked at it".into()),
            notify: None,
            plan_sha256: None,
            signing: None,
            resources: None,
        }
    }

    /// `bytes` with a record appended after its head, as `append` would.
    fn then_append(bytes: &[u8], seq: u64) -> Vec<u8> {
        let v = verify(bytes);
        let (line, _) = seal(record(seq, &v.head));
        let mut out = bytes.to_vec();
        out.extend(line);
        out
    }

    #[test]
    fn a_seal_sets_the_damage_aside_and_the_chain_goes_on() {
        let mut bytes = log(5);
        let at = bytes.windows(5).position(|w| w == b"\"ana\"").unwrap();
        bytes[at + 1] = b'b'; // record 1 edited
        assert!(
            seal_for(&log(5), None, seal_entry()).is_none(),
            "nothing to seal"
        );
        let (line, r, before) = seal_for(&bytes, None, seal_entry()).unwrap().unwrap();
        assert_eq!(before.records, 0);
        assert_eq!((r.seq, r.prev.as_str()), (6, GENESIS));
        let mut sealed = bytes.clone();
        sealed.extend(&line);
        let v = verify(&sealed);
        assert_eq!(v.problem, None);
        assert_eq!(v.records, 1);
        assert_eq!(v.head, r.hash);
        assert_eq!(
            (
                v.sealed[0].line,
                v.sealed[0].seal_line,
                v.sealed[0].seal_seq
            ),
            (1, 6, 6)
        );
        let next = then_append(&sealed, 7);
        let v = verify(&next);
        assert_eq!((v.problem.clone(), v.records), (None, 2));
        assert_eq!(
            trusted_records(&next, &v)
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            [6, 7]
        );

        // Changing a sealed byte again breaks the seal; so does damage after it.
        let mut again = next.clone();
        again[at + 2] = b'x';
        assert_eq!(verify(&again).problem.unwrap().line, 1);
        let mut later = next.clone();
        let last = later.windows(5).rposition(|w| w == b"\"ana\"").unwrap();
        later[last + 1] = b'b';
        let p = verify(&later).problem.unwrap();
        assert_eq!((p.line, p.kind), (7, Broken::Edited));
        // ...which a second seal sets aside in its turn.
        let (line2, r2, _) = seal_for(&later, None, seal_entry()).unwrap().unwrap();
        assert_eq!((r2.seq, r2.prev.as_str()), (8, r.hash.as_str()));
        later.extend(line2);
        let v = verify(&later);
        assert_eq!((v.problem, v.sealed.len()), (None, 2));
    }

    #[test]
    fn a_seal_of_a_cut_log_ends_the_cut_line_first() {
        let good = log(3);
        let cut = &good[..good.len() - 30];
        let (line, r, _) = seal_for(cut, None, seal_entry()).unwrap().unwrap();
        assert_eq!(line[0], b'\n');
        let mut sealed = cut.to_vec();
        sealed.extend(&line);
        let v = verify(&sealed);
        assert_eq!(v.problem, None, "{v:?}");
        assert_eq!(v.sealed[0].kind, Broken::Truncated);
        assert_eq!((v.records, r.seq), (3, 4));
    }

    #[test]
    fn a_seal_that_does_not_name_the_damage_or_its_head_does_not_count() {
        let mut bytes = log(4);
        let at = bytes.windows(5).rposition(|w| w == b"\"ana\"").unwrap();
        bytes[at + 1] = b'b'; // record 4 edited
        let (line, r, _) = seal_for(&bytes, None, seal_entry()).unwrap().unwrap();
        // The same seal, re-hashed with another line named.
        let mut wrong = r.clone();
        wrong.sealed.as_mut().unwrap().line = 3;
        let (wrong_line, _) = seal(wrong);
        let mut forged = bytes.clone();
        forged.extend(wrong_line);
        assert_eq!(verify(&forged).problem.unwrap().line, 4);
        let mut sealed = bytes.clone();
        sealed.extend(line);
        assert_eq!(verify(&sealed).problem, None);
    }
}
