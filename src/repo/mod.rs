//! The configuration repository: configuration is read from git objects at one commit, never
//! from the working tree.
//!
//! Invariant: reading configuration touches one commit's tree and the blobs under
//! `environments/` and `schemas/` only; it never walks history, so its cost does not depend on
//! the number of commits. The two questions about history ([`Repo::ancestry`] and
//! [`Repo::reachable_from`]) walk only between the two commits asked about and their merge base.

use std::path::{Path, PathBuf};

use git2::{BranchType, ObjectType, Oid, Repository, Status, StatusOptions};

use crate::config::{Input, InputFile, MAX_FILE_BYTES};

/// The directories configuration is read from.
pub const CONFIG_DIRS: [&str; 2] = ["environments", "schemas"];

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{} is not inside a git repository", .0.display())]
    NotARepository(PathBuf),
    #[error("cannot resolve revision `{rev}`: {message}")]
    BadRevision { rev: String, message: String },
    #[error("the repository has no commits yet")]
    NoCommits,
    #[error("commit {commit} has no `environments/` directory")]
    NoEnvironments { commit: String },
    #[error(
        "`{branch}` means the remote-tracking branch `{tracking}`, which this clone does not have{}",
        if *known { "" } else { " (there is no remote of that name)" }
    )]
    NoTrackingBranch {
        branch: String,
        remote: String,
        tracking: String,
        known: bool,
    },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// How the commit being deployed relates to the one live on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ancestry {
    /// The same commit.
    Same,
    /// The live commit is an ancestor: this many commits forward.
    Ahead(usize),
    /// The new commit is an ancestor of the live one: this many commits behind it.
    Behind(usize),
    /// Each has commits the other lacks.
    Diverged { ahead: usize, behind: usize },
    /// This clone does not have the live commit.
    Missing,
}

/// What `branch = "main"` is checked against: with a remote, the remote-tracking branch (what
/// was pushed, and so could be reviewed), not a local branch anyone can move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reviewed {
    /// `refs/remotes/<remote>/<branch>`: the branch's upstream, else `origin`'s.
    Remote(String),
    /// A repository without remotes: the revision itself, as before remotes mattered.
    Local(String),
    /// A tag, a commit id or a full ref: the same in every clone.
    Exact(String),
}

impl Reviewed {
    /// The revision to resolve.
    pub fn rev(&self) -> &str {
        match self {
            Reviewed::Remote(r) | Reviewed::Local(r) | Reviewed::Exact(r) => r,
        }
    }

    /// How people write it: `origin/main`.
    pub fn short(&self) -> &str {
        match self {
            Reviewed::Remote(r) => r.strip_prefix("refs/remotes/").unwrap_or(r),
            Reviewed::Local(r) | Reviewed::Exact(r) => r,
        }
    }

    /// Why this ref, for `plan`.
    pub fn why(&self) -> &'static str {
        match self {
            Reviewed::Remote(_) => "the remote-tracking branch: what was pushed",
            Reviewed::Local(_) => "this clone has no remote",
            Reviewed::Exact(_) => "a tag, commit or full ref, the same in every clone",
        }
    }
}

/// An opened configuration repository.
pub struct Repo {
    repo: Repository,
}

/// One commit of the repository.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub id: Oid,
    /// The revision as the user wrote it (`HEAD`, `main~2`...).
    pub rev: String,
    pub summary: String,
}

impl CommitInfo {
    pub fn short(&self) -> String {
        self.id.to_string()[..12].to_owned()
    }
}

impl Repo {
    /// Find the repository containing `dir`, as git does.
    pub fn discover(dir: &Path) -> Result<Repo, RepoError> {
        // Like git itself, trust the object store instead of re-hashing every blob read (about
        // a tenth of `check`); `git fsck` is the tool for verifying repository integrity.
        git2::opts::strict_hash_verification(false);
        let repo = Repository::discover(dir).map_err(|e| {
            if e.code() == git2::ErrorCode::NotFound {
                RepoError::NotARepository(dir.to_path_buf())
            } else {
                RepoError::Git(e)
            }
        })?;
        Ok(Repo { repo })
    }

    /// The working directory, when the repository has one.
    pub fn workdir(&self) -> Option<&Path> {
        self.repo.workdir()
    }

    /// Resolve a revision to a commit.
    pub fn commit(&self, rev: &str) -> Result<CommitInfo, RepoError> {
        let obj = self.repo.revparse_single(rev).map_err(|e| {
            if rev == "HEAD"
                && (e.code() == git2::ErrorCode::UnbornBranch || self.repo.head().is_err())
            {
                RepoError::NoCommits
            } else {
                RepoError::BadRevision {
                    rev: rev.to_owned(),
                    message: e.message().to_owned(),
                }
            }
        })?;
        let commit = obj.peel_to_commit().map_err(|e| RepoError::BadRevision {
            rev: rev.to_owned(),
            message: e.message().to_owned(),
        })?;
        Ok(CommitInfo {
            id: commit.id(),
            rev: rev.to_owned(),
            summary: commit.summary().ok().flatten().unwrap_or("").to_owned(),
        })
    }

    /// A shallow clone (`git clone --depth`): its history stops short, so `git fetch` alone
    /// does not bring older commits.
    pub fn is_shallow(&self) -> bool {
        self.repo.is_shallow()
    }

    /// Whether commit `id` is `rev`'s commit or one of its ancestors. A revision that does not
    /// resolve is [`RepoError::BadRevision`].
    pub fn reachable_from(&self, id: Oid, rev: &str) -> Result<bool, RepoError> {
        let tip = self.commit(rev)?;
        Ok(tip.id == id || self.repo.graph_descendant_of(tip.id, id)?)
    }

    /// How commit `new` relates to commit `live` (hex id, as recorded by a generation).
    pub fn ancestry(&self, new: Oid, live: &str) -> Result<Ancestry, RepoError> {
        let Some(live) = Oid::from_str(live)
            .ok()
            .filter(|id| self.repo.find_commit(*id).is_ok())
        else {
            return Ok(Ancestry::Missing);
        };
        if live == new {
            return Ok(Ancestry::Same);
        }
        let (ahead, behind) = self.repo.graph_ahead_behind(new, live)?;
        Ok(match (ahead, behind) {
            (_, 0) => Ancestry::Ahead(ahead),
            (0, _) => Ancestry::Behind(behind),
            _ => Ancestry::Diverged { ahead, behind },
        })
    }

    /// The ref that `branch = "<branch>"` is checked against (see [`Reviewed`]).
    pub fn reviewed_ref(&self, branch: &str) -> Result<Reviewed, RepoError> {
        let remotes: Vec<String> = self
            .repo
            .remotes()?
            .iter()
            .filter_map(|r| r.ok().flatten())
            .map(str::to_owned)
            .collect();
        let has = |name: &str| self.repo.find_reference(name).is_ok();
        if remotes.is_empty() {
            return Ok(Reviewed::Local(branch.to_owned()));
        }
        if branch.starts_with("refs/") {
            return Ok(Reviewed::Exact(branch.to_owned()));
        }
        // Already a remote-tracking branch (`origin/main`).
        if has(&format!("refs/remotes/{branch}")) {
            return Ok(Reviewed::Remote(format!("refs/remotes/{branch}")));
        }
        if let Some(remote) = remotes.iter().find(|r| {
            branch
                .strip_prefix(r.as_str())
                .is_some_and(|b| b.starts_with('/'))
        }) {
            return Err(RepoError::NoTrackingBranch {
                branch: branch.to_owned(),
                remote: remote.clone(),
                tracking: format!("refs/remotes/{branch}"),
                known: true,
            });
        }
        let local = self.repo.find_branch(branch, BranchType::Local).ok();
        let remote = self
            .repo
            .branch_upstream_remote(&format!("refs/heads/{branch}"))
            .ok()
            .and_then(|r| r.as_str().ok().map(str::to_owned))
            .unwrap_or_else(|| "origin".to_owned());
        // The configured upstream, even when its ref is gone (`git remote prune`): falling back
        // to another remote branch would check against a branch nobody chose.
        if let Some(up) = self.configured_upstream(branch) {
            if has(&up) {
                return Ok(Reviewed::Remote(up));
            }
            return Err(RepoError::NoTrackingBranch {
                branch: branch.to_owned(),
                known: remotes.contains(&remote),
                remote,
                tracking: up,
            });
        }
        let tracking = format!("refs/remotes/{remote}/{branch}");
        if has(&tracking) {
            return Ok(Reviewed::Remote(tracking));
        }
        // A tag or a commit id is the same in every clone.
        if local.is_none() && self.repo.revparse_single(branch).is_ok() {
            return Ok(Reviewed::Exact(branch.to_owned()));
        }
        Err(RepoError::NoTrackingBranch {
            branch: branch.to_owned(),
            remote: remote.clone(),
            tracking,
            known: remotes.contains(&remote),
        })
    }

    /// The first directory of `rel` (a path relative to the repository root) that the commit's
    /// tree holds as a symlink, with where it points: `(prefix, destination)`. `None` when no
    /// component of `rel` is a committed symlink.
    pub fn committed_symlink(
        &self,
        commit: &CommitInfo,
        rel: &Path,
    ) -> Result<Option<(PathBuf, String)>, RepoError> {
        let tree = self.repo.find_commit(commit.id)?.tree()?;
        let mut prefix = PathBuf::new();
        for part in rel.components() {
            prefix.push(part);
            let entry = match tree.get_path(&prefix) {
                Ok(e) => e,
                Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if entry.filemode() == 0o120000 {
                let blob = self.repo.find_blob(entry.id())?;
                let dest = String::from_utf8_lossy(blob.content()).into_owned();
                return Ok(Some((prefix, dest)));
            }
        }
        Ok(None)
    }

    /// The remote-tracking ref local branch `branch`'s upstream is configured to
    /// (`branch.<name>.merge` on a remote), whether or not that ref exists in this clone.
    fn configured_upstream(&self, branch: &str) -> Option<String> {
        let name = self
            .repo
            .branch_upstream_name(&format!("refs/heads/{branch}"))
            .ok()?;
        let name = name.as_str().ok()?;
        name.starts_with("refs/remotes/").then(|| name.to_owned())
    }

    /// A file at the root of a commit's tree (`commit`: a full or abbreviated id), `None` when
    /// the commit has no such file. Files larger than any configuration file are refused.
    pub fn root_file(&self, commit: &str, name: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let id = self.repo.revparse_single(commit)?.peel_to_commit()?.id();
        let tree = self.repo.find_commit(id)?.tree()?;
        let Some(entry) = tree.get_name(name) else {
            return Ok(None);
        };
        if entry.kind() != Some(ObjectType::Blob) {
            return Ok(None);
        }
        let (size, _) = self.repo.odb()?.read_header(entry.id())?;
        if size as u64 > MAX_FILE_BYTES {
            return Err(RepoError::Git(git2::Error::from_str(&format!(
                "{name} at commit {commit} is larger than {MAX_FILE_BYTES} bytes"
            ))));
        }
        Ok(Some(self.repo.find_blob(entry.id())?.content().to_vec()))
    }

    /// Read `environments/*.toml` and `schemas/*.schema.json` from the commit's tree.
    pub fn read_config(&self, commit: &CommitInfo) -> Result<Input, RepoError> {
        let tree = self.repo.find_commit(commit.id)?.tree()?;
        let mut input = Input {
            root: self.repo.workdir().map(Path::to_path_buf),
            ..Input::default()
        };
        let odb = self.repo.odb()?;
        for (dir, suffix) in [("environments", ".toml"), ("schemas", ".schema.json")] {
            let entry = match tree.get_path(Path::new(dir)) {
                Ok(e) => e,
                Err(e) if e.code() == git2::ErrorCode::NotFound => {
                    if dir == "environments" {
                        return Err(RepoError::NoEnvironments {
                            commit: commit.short(),
                        });
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if entry.kind() != Some(ObjectType::Tree) {
                continue;
            }
            let sub = self.repo.find_tree(entry.id())?;
            let mut files = Vec::new();
            for item in sub.iter() {
                let Ok(name) = item.name() else { continue };
                if !name.ends_with(suffix) || item.kind() != Some(ObjectType::Blob) {
                    continue;
                }
                let path = format!("{dir}/{name}");
                let (size, _) = odb.read_header(item.id())?;
                let content = if size as u64 > MAX_FILE_BYTES {
                    Err(size as u64)
                } else {
                    Ok(self.repo.find_blob(item.id())?.content().to_vec())
                };
                files.push(InputFile { path, content });
            }
            if dir == "environments" {
                input.environments = files;
            } else {
                input.schemas = files;
            }
        }
        Ok(input)
    }

    /// Files under `environments/` or `schemas/` that differ from HEAD in the index or the
    /// working tree, or are untracked (ignored files excluded). Empty for a bare repository.
    pub fn dirty_config_files(&self) -> Result<Vec<(String, &'static str)>, RepoError> {
        let specs: Vec<String> = CONFIG_DIRS.iter().map(|d| format!("{d}/")).collect();
        self.dirty_files(&specs, false)
    }

    /// Files matching `pathspecs` that differ from HEAD in the index or the working tree, or
    /// are untracked; with `ignored`, git-ignored files count too (as "ignored").
    pub fn dirty_files(
        &self,
        pathspecs: &[String],
        ignored: bool,
    ) -> Result<Vec<(String, &'static str)>, RepoError> {
        if self.repo.is_bare() || pathspecs.is_empty() {
            return Ok(Vec::new());
        }
        let mut opts = StatusOptions::new();
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(ignored)
            .recurse_ignored_dirs(ignored)
            .exclude_submodules(true);
        for spec in pathspecs {
            opts.pathspec(spec);
        }
        let statuses = self.repo.statuses(Some(&mut opts))?;
        let mut out = Vec::new();
        for s in statuses.iter() {
            let Ok(path) = s.path() else { continue };
            let st = s.status();
            let what = if st.contains(Status::IGNORED) {
                "ignored by git, never committed"
            } else if st.contains(Status::WT_NEW) {
                "untracked"
            } else if st.intersects(Status::WT_DELETED | Status::INDEX_DELETED) {
                "deleted"
            } else if st
                .intersects(Status::INDEX_NEW | Status::INDEX_MODIFIED | Status::INDEX_RENAMED)
            {
                "staged, not committed"
            } else if st.is_empty() {
                continue;
            } else {
                "modified"
            };
            out.push((path.to_owned(), what));
        }
        out.sort();
        Ok(out)
    }

    /// The files under `environments/` and `schemas/` that `commit` added or changed against
    /// its first parent (all of them for a root commit).
    pub fn changed_config_files(&self, commit: &CommitInfo) -> Result<Vec<String>, RepoError> {
        let c = self.repo.find_commit(commit.id)?;
        let tree = c.tree()?;
        let parent = match c.parent(0) {
            Ok(p) => Some(p.tree()?),
            Err(_) => None,
        };
        let mut opts = git2::DiffOptions::new();
        for d in CONFIG_DIRS {
            opts.pathspec(format!("{d}/"));
        }
        let diff = self
            .repo
            .diff_tree_to_tree(parent.as_ref(), Some(&tree), Some(&mut opts))?;
        Ok(diff
            .deltas()
            .filter_map(|d| {
                d.new_file()
                    .path()
                    .map(|p| p.to_string_lossy().into_owned())
            })
            .collect())
    }

    /// Where this clone is, for headings: its working tree (else its git directory) and the
    /// URL of `origin` (else of the only remote), so that a run from the wrong clone shows.
    pub fn location(&self) -> Location {
        let path = self.repo.workdir().unwrap_or(self.repo.path());
        let path = path.to_string_lossy();
        let path = path.strip_suffix('/').unwrap_or(&path).to_owned();
        let remote = self
            .remote()
            .map(|(name, url)| format!("{name} {}", without_userinfo(&url)));
        Location { path, remote }
    }

    /// `origin` (else the only remote) and its URL as configured, credentials included: show
    /// it only through [`without_userinfo`].
    fn remote(&self) -> Option<(String, String)> {
        let names = self.repo.remotes().ok();
        let names: Vec<&str> = names
            .iter()
            .flat_map(|r| r.iter().flatten().flatten())
            .collect();
        let name = match names.as_slice() {
            [only] => Some(*only),
            _ => names.iter().copied().find(|n| *n == "origin"),
        }?;
        let r = self.repo.find_remote(name).ok()?;
        Some((name.to_owned(), r.url().ok()?.to_owned()))
    }

    /// The URL of the remote [`Repo::location`] names, without credentials.
    pub fn remote_url(&self) -> Option<String> {
        self.remote().map(|(_, url)| without_userinfo(&url))
    }

    /// The working tree, or the git directory of a bare repository.
    pub fn root(&self) -> &Path {
        self.repo.workdir().unwrap_or(self.repo.path())
    }
}

/// `https://token@host/x` as `https://host/x`: a URL's credentials are never shown.
pub fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Where a clone is (see [`Repo::location`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Location {
    /// The working tree.
    pub path: String,
    /// `origin <url>`, when the clone has that remote (or only one).
    pub remote: Option<String>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.remote {
            Some(r) => write!(f, "{} ({r})", self.path),
            None => write!(f, "{}", self.path),
        }
    }
}
