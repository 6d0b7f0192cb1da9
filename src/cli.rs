//! Command-line definition (clap derive only). No flag changes what is deployed or where.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Environment-locked deployments: apply an environment's reviewed configuration to its own
/// account, atomically, or refuse.
#[derive(Debug, Parser)]
#[command(
    name = "deploy",
    version,
    after_help = "Exit codes: 0 success, 1 error, 2 changes pending (plan --detailed-exitcode), \
                  3 refused for safety, 4 failed and rolled back, 5 target locked, 64 usage error."
)]
pub struct Cli {
    /// Run as if started in DIR (as `git -C` does).
    #[arg(short = 'C', value_name = "DIR", global = true)]
    pub directory: Option<PathBuf>,

    /// Output format: text for people, json for programs (one document on stdout); sarif for
    /// code scanning (`check` only), markdown for a merge-request comment (`diff`, `plan`);
    /// csv and html for auditors (`deploy log` only).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    pub format: OutputFormat,

    /// The main job: `deploy --target NAME` plans, shows the diff, confirms and applies.
    #[command(flatten)]
    pub deploy: ApplyArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    /// SARIF 2.1.0 (`deploy check` only).
    Sarif,
    /// A merge-request comment body (`deploy diff`, `deploy plan`).
    Markdown,
    /// One row per log record, RFC 4180 (`deploy log` only).
    Csv,
    /// One self-contained HTML page: timelines, signatures, verification and diffs
    /// (`deploy log` only).
    Html,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate every environment at a commit: the CI merge gate. Touches no target.
    Check(CheckArgs),
    /// List environments: name, account, schema, target, protected, branch.
    Envs(RevArgs),
    /// Show how each environment's resolved configuration changes between two commits.
    Diff(DiffArgs),
    /// Resolve one environment from HEAD and show what would change. Writes nothing.
    Plan(PlanArgs),
    /// Same as `deploy --target NAME`.
    Apply(ApplyArgs),
    /// Show which generation is live, its commit, drift from what was written, and what
    /// deploying HEAD would change. Writes nothing.
    Status(StatusArgs),
    /// Adopt a missing or empty target for an environment: prove its owner, show what will be
    /// stamped, and write the stamp (a protected environment's target is adopted only so).
    Adopt(AdoptArgs),
    /// Move an `exec` target's state from a directory on this machine into the shared store its
    /// configuration names ([target.state] of kind etcd or provider), keeping every generation
    /// and the log's chain; refuses a store that already has a stamp.
    Migrate(MigrateArgs),
    /// Make an earlier generation live again (same lock, stamp and identity checks), then
    /// health-check it.
    Rollback(RollbackArgs),
    /// Show the deployment log, newest first (`deploy log verify` checks its hash chain).
    /// Without --environment: every environment whose target this machine can reach. Filters
    /// select records; each log's verification always covers all of it. `--format csv` and
    /// `--format html` (one self-contained page) are for auditors.
    Log(LogArgs),
    /// Print the JSON Schema of environment files (for editors such as taplo).
    Schema,
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The commit to validate (default: HEAD).
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    pub rev: String,
}

#[derive(Debug, Args)]
pub struct RevArgs {
    /// The commit to read (default: HEAD).
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    pub rev: String,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old commit.
    #[arg(value_name = "REV1")]
    pub from: String,
    /// The new commit.
    #[arg(value_name = "REV2")]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The environment to plan for.
    #[arg(long, value_name = "NAME")]
    pub target: String,
    /// Also write the plan as JSON to FILE, for `deploy apply --plan FILE` (e.g. after review).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when nothing would change and 2 when changes are pending (for CI).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args, Default)]
pub struct ApplyArgs {
    /// The environment to deploy. Everything else comes from the commit.
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// Apply without asking (required without a terminal). Never skips a safety check.
    #[arg(long)]
    pub yes: bool,
    /// Apply exactly this saved plan (`deploy plan --out FILE`), whatever HEAD is now, or
    /// refuse: a plan for another environment, a stale or edited plan, or one whose commit is
    /// not on `branch`.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only this environment's log (the same as one --environment).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// Only these environments' logs (repeatable).
    #[arg(long = "environment", value_name = "NAME")]
    pub environments: Vec<String>,
    /// Only records at or after TIME: an RFC 3339 timestamp (2026-11-21T14:30:00Z,
    /// 2026-11-21T15:30:00+01:00) or a date (2026-11-21, from its start, UTC).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only records up to TIME: a timestamp (inclusive) or a date (through the end of that
    /// day, UTC).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only records whose operator is USER or USER@HOST.
    #[arg(long, value_name = "TEXT")]
    pub operator: Option<String>,
    /// Only records with this outcome (repeatable): applied, unchanged, rolled-back, failed,
    /// refused, sealed.
    #[arg(long = "outcome", value_name = "OUTCOME")]
    pub outcomes: Vec<String>,
    #[command(subcommand)]
    pub command: Option<LogCommand>,
}

#[derive(Debug, Args)]
pub struct LogTargetArgs {
    /// Only this environment's log.
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Recompute the hash chain; exit 1 naming the first record that does not verify (edited,
    /// dropped, reordered, truncated or forged).
    Verify(LogTargetArgs),
    /// After a person has looked at a log that does not verify: append a `seal` record that
    /// names the first damaged record and the old head, and continues the chain (nothing is
    /// rewritten or removed). Same lock, stamp and identity checks as a deployment.
    Seal(LogSealArgs),
}

#[derive(Debug, Args)]
pub struct LogSealArgs {
    /// The environment whose log to seal.
    #[arg(long, value_name = "NAME")]
    pub target: String,
    /// What was found and why the log may go on (required; kept in the seal record).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Seal without typing the environment's name (required without a terminal).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The environment to inspect.
    #[arg(long, value_name = "NAME")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The environment to roll back.
    #[arg(long, value_name = "NAME")]
    pub target: String,
    /// The generation to make live (default: the one before the live one).
    #[arg(long, value_name = "ID")]
    pub to: Option<u64>,
    /// Roll back without asking (required without a terminal). Never skips a safety check.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The environment whose state to move.
    #[arg(long, value_name = "NAME")]
    pub target: String,
    /// The directory that held its state (the `state = "DIR"` of its configuration before).
    #[arg(long, value_name = "DIR")]
    pub from: std::path::PathBuf,
    /// Move without asking for the environment's name (required without a terminal).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The environment whose target to adopt.
    #[arg(long, value_name = "NAME")]
    pub target: String,
    /// Adopt without asking for the environment's name (required without a terminal).
    /// Never skips a safety check.
    #[arg(long)]
    pub yes: bool,
}
