//! The `dir` target: files on this machine, switched atomically with one `rename(2)`.
//!
//! Layout under the target's path:
//!
//! ```text
//! current -> generations/00000007          relative symlink: the live generation
//! generations/00000007/<resource>.toml     immutable once written
//! generations/00000007/.meta.json          the metadata given to `apply` (commit, created...)
//! .envlock/stamp.json                      who the target belongs to
//! .envlock/lock                            flock'ed; holds the holder's JSON while held
//! .envlock/secret.key                      mode 0600: the HMAC key secrets are compared with
//! ```
//!
//! Invariants: a generation is complete and fsynced before `current` points at it, so readers
//! see the old generation or the new one, never a mix, and a crash at any instant leaves one of
//! them live; work in progress lives in `generations/.tmp-*` and `current.tmp-*`, which nothing
//! live refers to and [`super::store::GenerationStore::prune`] removes. No symlink may lead out of the target: the path
//! itself, `.envlock` and `generations` must be real directories and `current` must point to
//! `generations/<id>` inside it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, flock};
use rustix::io::Errno;

use super::perms;
use super::{
    Drift, GenerationId, GenerationInfo, Holder, Live, LockGuard, LogTail, Pruned, STAMP_VERSION,
    Stamp, StampState, StateItem, Target, TargetError,
};
use crate::config::resource_name_problem;

const STATE_DIR: &str = ".envlock";
const STAMP_FILE: &str = "stamp.json";
/// Written by `deploy migrate` once the state was copied into another store: this directory's
/// state is a record only from then on ([`store::StateStore::stamp`] refuses it).
const MOVED_FILE: &str = "moved.json";
const LOCK_FILE: &str = "lock";
const GENERATIONS: &str = "generations";
const CURRENT: &str = "current";
const META_FILE: &str = ".meta.json";
/// Present in a generation that failed its health check; holds the reason.
const FAILED_FILE: &str = ".failed";
/// SHA-256 of every resource file as written (`{"name": "hex"}`), to detect hand edits.
const SUMS_FILE: &str = ".sums.json";
/// Prefix of work in progress inside `generations/` (an apply's new generation, a pruned one).
const TMP_PREFIX: &str = ".tmp-";
/// Prefix of a new `current` symlink before it is renamed over the old one.
const CURRENT_TMP_PREFIX: &str = "current.tmp-";
/// Prefix of a new stamp before it is renamed into place.
const STAMP_TMP_PREFIX: &str = "stamp.json.tmp-";
/// The crash journal of an unfinished deployment.
const JOURNAL_FILE: &str = "journal.json";
/// Prefix of a new journal before it is renamed into place.
const JOURNAL_TMP_PREFIX: &str = "journal.json.tmp-";
/// The deployment log (JSON Lines, see `crate::log`).
const LOG_FILE: &str = "log.jsonl";
/// What the log's `fstat` said after this target's last append (see `log_untouched`).
const LOG_CHECKPOINT_FILE: &str = "log.checkpoint";
/// The key secrets are hashed with (64 hex digits), mode 0600.
const SECRET_KEY_FILE: &str = "secret.key";
/// Prefix of a new secret key before it is linked into place.
const SECRET_KEY_TMP_PREFIX: &str = "secret.key.tmp-";
/// Mode of files that hold secrets (resources, the key); others get the default (umask).
const PRIVATE_MODE: u32 = 0o600;
const DEFAULT_MODE: u32 = 0o666;
/// How many entries an [`StampState::Unstamped`] lists.
const MAX_LISTED: usize = 10;
/// How often `lock` looks again when the lock is held but the holder's JSON is not readable yet
/// (the holder is between taking the lock and writing it), and how long it waits in between.
const LOCK_READ_TRIES: usize = 5;
const LOCK_READ_PAUSE: Duration = Duration::from_millis(20);

/// A `dir` target at an absolute, already resolved path.
#[derive(Debug, Clone)]
pub struct DirTarget {
    path: PathBuf,
}

/// What the layout check found.
struct Layout {
    /// The target directory exists.
    exists: bool,
    /// The generation `current` points to, if there is a `current`.
    current: Option<GenerationId>,
}

/// Map an I/O error to [`TargetError::Io`] saying what was being done to which path.
fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> TargetError {
    let what = what.to_owned();
    let path = path.to_path_buf();
    move |source| TargetError::Io { what, path, source }
}

/// `00000007` for generation 7.
fn generation_name(id: GenerationId) -> String {
    format!("{id:08}")
}

/// The id of a generation directory name; only the exact form [`generation_name`] writes.
fn parse_generation_name(name: &str) -> Option<GenerationId> {
    if !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = name.parse().ok()?;
    (generation_name(id) == name).then_some(id)
}

/// `lstat`, with "does not exist" as `None`.
fn lstat(path: &Path) -> Result<Option<fs::Metadata>, TargetError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("inspect", path)(e)),
    }
}

/// False when `holder` ran on this host and its process is gone (killed: the kernel released
/// its `flock`, but nothing emptied the lock file). A holder on another host counts as alive.
fn holder_alive(holder: &Holder) -> bool {
    let here = rustix::system::uname().nodename().to_string_lossy() == holder.host;
    let Some(pid) = i32::try_from(holder.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return !here;
    };
    !here || rustix::process::test_kill_process(pid) != Err(Errno::SRCH)
}

/// Where a symlink points, for messages.
fn link_text(path: &Path) -> String {
    fs::read_link(path)
        .map(|t| t.display().to_string())
        .unwrap_or_else(|_| "an unreadable destination".into())
}

/// The names in a directory, sorted; a missing directory has none.
fn list_dir(dir: &Path) -> Result<Vec<String>, TargetError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// fsync a directory, so that entries created, renamed or removed in it are durable.
fn sync_dir(dir: &Path) -> Result<(), TargetError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Create `dir` and any missing parents, fsyncing each parent that gained an entry.
fn ensure_dir(dir: &Path) -> Result<(), TargetError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(TargetError::Refused(format!(
                "{} exists but is not a directory",
                dir.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", dir)(e)),
    }
    let parent = dir.parent();
    if let Some(parent) = parent {
        ensure_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err("create directory", dir)(e)),
    }
    match parent {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Create `path` (which must not exist), write `bytes` and fsync it.
fn write_new_synced(path: &Path, bytes: &[u8]) -> Result<(), TargetError> {
    write_new_synced_mode(path, bytes, DEFAULT_MODE)
}

/// [`write_new_synced`] creating the file with `mode` (before the umask).
fn write_new_synced_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TargetError> {
    let mut file = create_new(path, mode)?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}

/// Create a new file with `mode` from the start (never widened, never chmod'ed afterwards).
fn create_new(path: &Path, mode: u32) -> Result<File, TargetError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))
}

/// Up to this many files, a generation is made durable file by file (fsync each, then the
/// directory); above it, with one `syncfs(2)`, whose cost does not grow with the file count but
/// includes whatever else is waiting to be written on that filesystem.
const FSYNC_EACH_MAX: usize = 64;

fn symlinked_resource(file: &Path) -> TargetError {
    TargetError::Refused(format!(
        "{} is a symlink to {}; resources are the target's own files",
        file.display(),
        link_text(file)
    ))
}

/// A directory of the target, opened to create or read files by name in it: one path lookup
/// for the directory instead of one per file, and the same directory for every file even if
/// its path were swapped meanwhile. Never through a symlink.
struct OpenDir {
    fd: rustix::fd::OwnedFd,
    path: PathBuf,
    /// Whether reads still ask for O_NOATIME (until the kernel refuses it once).
    noatime: AtomicBool,
}

impl OpenDir {
    fn open(path: &Path) -> Result<OpenDir, TargetError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => Ok(OpenDir {
                fd,
                path: path.to_owned(),
                noatime: AtomicBool::new(true),
            }),
            Err(Errno::LOOP | Errno::NOTDIR) => Err(TargetError::Corrupt(format!(
                "{} is not a directory",
                path.display()
            ))),
            Err(e) => Err(io_err("open", path)(e.into())),
        }
    }

    /// Create the file `name` (which must not exist) with `mode` from the start (never
    /// widened, never chmod'ed afterwards) and write `bytes`, without fsync: the caller
    /// fsyncs the file it returns, or makes a whole batch durable at once with
    /// [`OpenDir::sync_filesystem`].
    fn write_new(&self, name: &str, bytes: &[u8], mode: u32) -> Result<File, TargetError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut file = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode))
            .map(File::from)
            .map_err(|e| io_err("create", &self.path.join(name))(e.into()))?;
        file.write_all(bytes)
            .map_err(io_err("write", &self.path.join(name)))?;
        Ok(file)
    }

    /// `syncfs(2)` on the filesystem holding the directory: every file written there so far,
    /// its data and its directory entries, is durable when it returns (Linux reports writeback
    /// errors here). Far cheaper than one fsync per file for a large generation, and what
    /// `sync` does.
    fn sync_filesystem(&self) -> Result<(), TargetError> {
        rustix::fs::syncfs(&self.fd).map_err(|e| io_err("syncfs", &self.path)(e.into()))
    }

    /// `fsync(2)` of the directory itself: the entries made in it are durable.
    fn sync(&self) -> Result<(), TargetError> {
        rustix::fs::fsync(&self.fd).map_err(|e| io_err("fsync directory", &self.path)(e.into()))
    }

    /// The bytes of the file `name`; never follows a symlink or blocks on a FIFO. Read with one
    /// `read(2)` of a byte more than the size `fstat` gives: a regular file's read returns
    /// less than asked only at its end.
    fn read_resource(&self, name: &str) -> Result<Vec<u8>, TargetError> {
        let file = || self.path.join(name);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        // Reading for a plan is not an access by whoever uses the files: without O_NOATIME,
        // the first read after a write dirties every inode. Only the files' owner may ask for
        // it; anyone else reads them as usual.
        let open = |flags| rustix::fs::openat(&self.fd, name, flags, Mode::empty());
        let opened = if self.noatime.load(Ordering::Relaxed) {
            open(flags | OFlags::NOATIME).or_else(|e| {
                if e != Errno::PERM {
                    return Err(e);
                }
                self.noatime.store(false, Ordering::Relaxed);
                open(flags)
            })
        } else {
            open(flags)
        };
        let mut f = match opened {
            Ok(fd) => File::from(fd),
            Err(Errno::LOOP) => return Err(symlinked_resource(&file())),
            Err(e) => return Err(io_err("read", &file())(e.into())),
        };
        let not_a_file = || TargetError::Corrupt(format!("{} is not a file", file().display()));
        let meta = f.metadata().map_err(|e| io_err("read", &file())(e))?;
        if !meta.is_file() {
            return Err(not_a_file());
        }
        let mut bytes = vec![0; usize::try_from(meta.len()).unwrap_or(0) + 1];
        let mut len = 0;
        loop {
            match f.read(&mut bytes[len..]) {
                Ok(n) => {
                    len += n;
                    if len < bytes.len() {
                        break;
                    }
                    // Grew since the fstat.
                    bytes.resize(2 * len, 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(Errno::ISDIR.raw_os_error()) => {
                    return Err(not_a_file());
                }
                Err(e) => return Err(io_err("read", &file())(e)),
            }
        }
        bytes.truncate(len);
        Ok(bytes)
    }
}

/// From this many resources on, a generation is read on all cores.
const PARALLEL_MIN: usize = 256;

/// Remove a leftover file, symlink or directory tree.
fn remove_any(path: &Path) -> Result<(), TargetError> {
    let Some(meta) = lstat(path)? else {
        return Ok(());
    };
    let result = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.map_err(io_err("remove", path))
}

/// The reason a resource name cannot be a file name here, if it cannot.
fn resource_name_refusal(name: &str) -> Option<String> {
    if name.contains(['/', '\0']) || name.starts_with('.') {
        return Some(format!(
            "refusing to write resource {name:?}: its name could leave the generation directory"
        ));
    }
    resource_name_problem(name).map(|p| format!("refusing to write resource {name:?}: {p}"))
}

impl DirTarget {
    /// A target at `path`, which must be absolute and already resolved (see
    /// [`crate::config::TargetKind::Dir`]'s `resolved`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DirTarget { path: path.into() }
    }

    /// The target's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SHA-256 of every resource file of generation `id` as written (`None`: written
    /// without checksums).
    fn sums(&self, id: GenerationId) -> Result<Option<BTreeMap<String, String>>, TargetError> {
        let file = self.generation_dir(id).join(SUMS_FILE);
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &file)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TargetError::Corrupt(format!("{} is not valid: {e}", file.display())))
    }

    /// The directory where envlock keeps its state for this target (stamp, journal, log).
    pub fn state_dir(&self) -> PathBuf {
        self.path.join(STATE_DIR)
    }

    /// `.envlock/<name>` (a private item of the target kind, e.g. an `exec` undo journal).
    pub fn read_private(&self, name: &str) -> Result<Option<Vec<u8>>, TargetError> {
        let path = self.state_dir().join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Replace `.envlock/<name>` with `bytes` durably, mode 0600 from the start (it may hold
    /// previous values of secrets).
    pub fn write_private(&self, name: &str, bytes: &[u8]) -> Result<(), TargetError> {
        let dir = self.state_dir();
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.write_all(bytes).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &dir))
    }

    /// Say, durably, that this state was moved to `to` (see `MOVED_FILE`).
    pub fn mark_moved(&self, to: &str) -> Result<(), TargetError> {
        let note = serde_json::json!({ "to": to, "time": super::now_rfc3339() });
        self.write_private(MOVED_FILE, note.to_string().as_bytes())
    }

    /// Remove `.envlock/<name>` durably; absent is not an error.
    pub fn remove_private(&self, name: &str) -> Result<(), TargetError> {
        let path = self.state_dir().join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
        let dir = self.state_dir();
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &dir))
    }

    fn generations_dir(&self) -> PathBuf {
        self.path.join(GENERATIONS)
    }

    fn generation_dir(&self, id: GenerationId) -> PathBuf {
        self.generations_dir().join(generation_name(id))
    }

    fn stamp_path(&self) -> PathBuf {
        self.state_dir().join(STAMP_FILE)
    }

    /// Refuse any layout through which a read or write could leave the target, and find the
    /// live generation.
    fn check_layout(&self) -> Result<Layout, TargetError> {
        let path = &self.path;
        match lstat(path)? {
            None => {
                return Ok(Layout {
                    exists: false,
                    current: None,
                });
            }
            Some(m) if m.file_type().is_symlink() => {
                return Err(TargetError::Refused(format!(
                    "the target path {} is a symlink to {}; a dir target must be a real \
                     directory, so that it cannot lead into another environment's target",
                    path.display(),
                    link_text(path)
                )));
            }
            Some(m) if !m.is_dir() => {
                return Err(TargetError::Refused(format!(
                    "the target path {} exists but is not a directory",
                    path.display()
                )));
            }
            Some(m) => perms::check_mode(path, &m)?,
        }
        for name in [STATE_DIR, GENERATIONS] {
            let sub = path.join(name);
            match lstat(&sub)? {
                Some(m) if m.file_type().is_symlink() => {
                    return Err(TargetError::Refused(format!(
                        "{} is a symlink to {}; envlock only ever makes it a real directory \
                         inside the target",
                        sub.display(),
                        link_text(&sub)
                    )));
                }
                Some(m) if !m.is_dir() => {
                    return Err(TargetError::Refused(format!(
                        "{} is not a directory; envlock only ever makes it a directory",
                        sub.display()
                    )));
                }
                Some(m) => perms::check_mode(&sub, &m)?,
                None => {}
            }
        }
        self.check_state(perms::check_mode)?;
        let current = path.join(CURRENT);
        let Some(meta) = lstat(&current)? else {
            return Ok(Layout {
                exists: true,
                current: None,
            });
        };
        if !meta.file_type().is_symlink() {
            return Err(TargetError::Refused(format!(
                "{} is not a symlink; envlock only ever makes it a relative symlink to \
                 {GENERATIONS}/<id>",
                current.display()
            )));
        }
        let dest = fs::read_link(&current).map_err(io_err("read symlink", &current))?;
        let parts: Vec<Component<'_>> = dest.components().collect();
        let id = match parts.as_slice() {
            [Component::Normal(g), Component::Normal(name)] if *g == GENERATIONS => {
                name.to_str().and_then(parse_generation_name)
            }
            _ => None,
        };
        let Some(id) = id else {
            return Err(TargetError::Refused(format!(
                "{} points to {}, not to {GENERATIONS}/<id> inside the target",
                current.display(),
                dest.display()
            )));
        };
        // The lexical check above cannot see a generation directory that is itself a symlink.
        match fs::canonicalize(&current) {
            Ok(real) => {
                let base = fs::canonicalize(self.generations_dir())
                    .map_err(io_err("resolve", &self.generations_dir()))?;
                if !real.starts_with(&base) {
                    return Err(TargetError::Refused(format!(
                        "{} resolves to {}, outside {}",
                        current.display(),
                        real.display(),
                        base.display()
                    )));
                }
            }
            // Dangling: nothing to escape to; reading it reports the corruption.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("resolve", &current)(e)),
        }
        Ok(Layout {
            exists: true,
            current: Some(id),
        })
    }

    /// Apply `check` to every file in `.envlock/` (stamp, lock, journal, log, key...); symlinks
    /// are refused where each file is read.
    fn check_state(
        &self,
        check: fn(&Path, &fs::Metadata) -> Result<(), TargetError>,
    ) -> Result<(), TargetError> {
        let dir = self.state_dir();
        for name in list_dir(&dir)? {
            let file = dir.join(&name);
            if let Some(m) = lstat(&file)?
                && !m.file_type().is_symlink()
            {
                check(&file, &m)?;
            }
        }
        Ok(())
    }

    /// Before the first write of a run: the target directory, `.envlock/`, `generations/` and
    /// every file in `.envlock/` belong to this user or root ([`perms::check_owner`]).
    fn check_owners(&self) -> Result<(), TargetError> {
        for dir in [self.path.clone(), self.state_dir(), self.generations_dir()] {
            if let Some(m) = lstat(&dir)? {
                perms::check_owner(&dir, &m)?;
            }
        }
        self.check_state(perms::check_owner)
    }

    /// The stamp file, parsed; `None` when there is none.
    fn read_stamp(&self) -> Result<Option<Stamp>, TargetError> {
        let file = self.stamp_path();
        match lstat(&file)? {
            None => return Ok(None),
            Some(m) if m.file_type().is_symlink() => {
                return Err(TargetError::Refused(format!(
                    "{} is a symlink to {}; a stamp must be the target's own file",
                    file.display(),
                    link_text(&file)
                )));
            }
            Some(m) if !m.is_file() => {
                return Err(TargetError::Corrupt(format!(
                    "{} is not a file",
                    file.display()
                )));
            }
            Some(_) => {}
        }
        let bytes = fs::read(&file).map_err(io_err("read", &file))?;
        let stamp: Stamp = serde_json::from_slice(&bytes).map_err(|e| {
            TargetError::Corrupt(format!("{} is not a valid stamp: {e}", file.display()))
        })?;
        if stamp.version > STAMP_VERSION {
            return Err(TargetError::Refused(format!(
                "{} has format version {}, newer than this envlock understands ({STAMP_VERSION}); \
                 upgrade envlock",
                file.display(),
                stamp.version
            )));
        }
        Ok(Some(stamp))
    }

    /// Refuse to write to a target that nobody adopted.
    fn require_stamped(&self) -> Result<Layout, TargetError> {
        let layout = self.check_layout()?;
        if layout.exists && self.read_stamp()?.is_some() {
            return Ok(layout);
        }
        Err(TargetError::Refused(format!(
            "{} is not stamped; a target is written only after its stamp",
            self.path.display()
        )))
    }

    /// True when `.envlock/` holds nothing but what locking (or an interrupted stamp) leaves.
    fn state_dir_is_bare(&self) -> Result<bool, TargetError> {
        Ok(list_dir(&self.state_dir())?
            .iter()
            .all(|n| n == LOCK_FILE || n.starts_with(STAMP_TMP_PREFIX)))
    }

    /// The ids of the generation directories, oldest first.
    fn generation_ids(&self) -> Result<Vec<GenerationId>, TargetError> {
        let dir = self.generations_dir();
        let mut ids = Vec::new();
        for name in list_dir(&dir)? {
            let Some(id) = parse_generation_name(&name) else {
                continue;
            };
            let entry = dir.join(&name);
            match lstat(&entry)? {
                Some(m) if m.file_type().is_symlink() => {
                    return Err(TargetError::Refused(format!(
                        "{} is a symlink to {}; generations are real directories",
                        entry.display(),
                        link_text(&entry)
                    )));
                }
                Some(m) if m.is_dir() => ids.push(id),
                Some(_) => {
                    return Err(TargetError::Corrupt(format!(
                        "{} is not a directory",
                        entry.display()
                    )));
                }
                None => {}
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// What generation `id`'s metadata and failure mark say; `current` is the live one.
    fn generation_info(
        &self,
        id: GenerationId,
        current: Option<GenerationId>,
    ) -> Result<GenerationInfo, TargetError> {
        let dir = self.generation_dir(id);
        let file = dir.join(META_FILE);
        let bytes = fs::read(&file).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                TargetError::Corrupt(format!("{} is missing", file.display()))
            } else {
                io_err("read", &file)(e)
            }
        })?;
        let meta: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            TargetError::Corrupt(format!("{} is not valid JSON: {e}", file.display()))
        })?;
        let text = |key: &str| meta.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let created = match text("created") {
            Some(c) => c,
            None => fs::symlink_metadata(&dir)
                .and_then(|m| m.modified())
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .map_err(io_err("inspect", &dir))?,
        };
        let failed_file = dir.join(FAILED_FILE);
        let failed = match fs::read(&failed_file) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).trim().to_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &failed_file)(e)),
        };
        Ok(GenerationInfo {
            id,
            commit: text("commit").unwrap_or_default(),
            created,
            live: current == Some(id),
            failed,
            meta,
        })
    }

    /// Every resource of one generation, checked to be exactly what `apply` writes.
    fn read_generation(&self, id: GenerationId) -> Result<BTreeMap<String, Vec<u8>>, TargetError> {
        let dir = self.generation_dir(id);
        match lstat(&dir)? {
            Some(m) if m.is_dir() => {}
            _ => {
                return Err(TargetError::Corrupt(format!(
                    "generation {} ({}) is missing",
                    id,
                    dir.display()
                )));
            }
        }
        let open = OpenDir::open(&dir)?;
        let mut files = Vec::new();
        let list_err = |e: Errno| io_err("list", &dir)(e.into());
        for entry in rustix::fs::Dir::read_from(&open.fd).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let bytes = entry.file_name().to_bytes();
            if matches!(bytes, b"." | b"..") {
                continue;
            }
            let name = String::from_utf8_lossy(bytes).into_owned();
            if name == META_FILE || name == FAILED_FILE || name == SUMS_FILE {
                continue;
            }
            if name
                .strip_suffix(".toml")
                .is_none_or(|s| resource_name_problem(s).is_some())
            {
                return Err(TargetError::Corrupt(format!(
                    "unexpected entry {}: generations are written only by envlock and never \
                     changed",
                    dir.join(&name).display()
                )));
            }
            // The entry's type comes with the directory listing (no stat per file, unless the
            // filesystem does not say); O_NOFOLLOW, O_NONBLOCK and fstat in `read_resource`
            // cover an entry swapped for a symlink or a FIFO since.
            let kind = match entry.file_type() {
                FileType::Unknown => {
                    rustix::fs::statat(&open.fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                        .map(|st| FileType::from_raw_mode(st.st_mode))
                        .map_err(|e| io_err("inspect", &dir.join(&name))(e.into()))?
                }
                kind => kind,
            };
            if kind == FileType::Symlink {
                return Err(symlinked_resource(&dir.join(&name)));
            }
            if kind != FileType::RegularFile {
                return Err(TargetError::Corrupt(format!(
                    "{} is not a file",
                    dir.join(&name).display()
                )));
            }
            files.push(name);
        }
        let read = |name: &String| {
            let stem = name.strip_suffix(".toml").unwrap_or(name).to_owned();
            open.read_resource(name).map(|bytes| (stem, bytes))
        };
        let read: Vec<Result<(String, Vec<u8>), TargetError>> = if files.len() >= PARALLEL_MIN {
            crate::parallel::map(&files, read)
        } else {
            files.iter().map(read).collect()
        };
        read.into_iter().collect()
    }

    /// Write generation `id` into the new directory `tmp`, make it durable, and rename it into
    /// place (not live yet).
    fn complete_generation(
        &self,
        tmp: &Path,
        id: GenerationId,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &serde_json::Value,
    ) -> Result<(), TargetError> {
        let generations = self.generations_dir();
        let dir = OpenDir::open(tmp)?;
        let each = resources.len() <= FSYNC_EACH_MAX;
        let half = resources.len() / 2;
        let write = |(i, (name, bytes)): (usize, (&String, &Vec<u8>))| {
            if i == half {
                crate::failpoint::hit("dir-write-half");
            }
            let mode = if private.contains(name) {
                PRIVATE_MODE
            } else {
                DEFAULT_MODE
            };
            let name = format!("{name}.toml");
            let file = dir.write_new(&name, bytes, mode)?;
            if each {
                file.sync_all()
                    .map_err(io_err("fsync", &dir.path.join(&name)))?;
            }
            Ok::<(), TargetError>(())
        };
        let sums = || {
            let sums: serde_json::Map<String, serde_json::Value> = resources
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(super::sha256_hex(v))))
                .collect();
            serde_json::to_vec(&sums)
        };
        // One thread writes: creating files in one directory serialises on the directory's
        // lock in the kernel, and two writers spent most of their time spinning on it (perf).
        // The checksums are computed on another core meanwhile.
        let (written, sums_bytes) = std::thread::scope(|s| {
            let sums = s.spawn(sums);
            (
                resources.iter().enumerate().try_for_each(write),
                sums.join().expect("hashing does not panic"),
            )
        });
        written?;
        let mut sums_bytes = sums_bytes
            .map_err(|e| TargetError::Corrupt(format!("cannot serialise the checksums: {e}")))?;
        sums_bytes.push(b'\n');
        let mut meta_bytes = serde_json::to_vec_pretty(meta)
            .map_err(|e| TargetError::Corrupt(format!("cannot serialise the metadata: {e}")))?;
        meta_bytes.push(b'\n');
        // Plain checksums of files with secrets would let a weak secret be guessed offline.
        let sums_mode = if private.is_empty() {
            DEFAULT_MODE
        } else {
            PRIVATE_MODE
        };
        let meta_file = dir.write_new(META_FILE, &meta_bytes, DEFAULT_MODE)?;
        let sums_file = dir.write_new(SUMS_FILE, &sums_bytes, sums_mode)?;
        if each {
            for (file, name) in [(meta_file, META_FILE), (sums_file, SUMS_FILE)] {
                file.sync_all()
                    .map_err(io_err("fsync", &dir.path.join(name)))?;
            }
            dir.sync()?;
        } else {
            dir.sync_filesystem()?;
        }
        let dest = self.generation_dir(id);
        if lstat(&dest)?.is_some() {
            return Err(TargetError::Corrupt(format!(
                "{} already exists",
                dest.display()
            )));
        }
        crate::failpoint::hit("dir-before-generation-rename");
        fs::rename(tmp, &dest).map_err(io_err("rename into place", &dest))?;
        sync_dir(&generations)?;
        Ok(())
    }

    /// Point `current` at generation `id` with one `rename(2)`, durably.
    fn switch_current(&self, id: GenerationId) -> Result<(), TargetError> {
        let tmp = self
            .path
            .join(format!("{CURRENT_TMP_PREFIX}{}", std::process::id()));
        remove_any(&tmp)?;
        let dest = Path::new(GENERATIONS).join(generation_name(id));
        std::os::unix::fs::symlink(&dest, &tmp).map_err(io_err("create symlink", &tmp))?;
        let current = self.path.join(CURRENT);
        crate::failpoint::hit("dir-switch-before-rename");
        if let Err(e) = fs::rename(&tmp, &current) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("rename into place", &current)(e));
        }
        sync_dir(&self.path)
    }

    /// `.envlock/secret.key`, checked to be a regular file of 64 hex digits.
    fn read_secret_key(&self) -> Result<Option<Vec<u8>>, TargetError> {
        let file = self.state_dir().join(SECRET_KEY_FILE);
        match lstat(&file)? {
            None => return Ok(None),
            Some(m) if !m.is_file() => {
                return Err(TargetError::Refused(format!(
                    "{} is not a regular file (a symlink?); envlock only ever makes it a file",
                    file.display()
                )));
            }
            Some(_) => {}
        }
        let text = fs::read_to_string(&file).map_err(io_err("read", &file))?;
        let text = text.trim_end();
        let key: Option<Vec<u8>> = (text.len() == 2 * crate::secret::KEY_LEN)
            .then(|| {
                (0..text.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
                    .collect()
            })
            .flatten();
        key.map(Some).ok_or_else(|| {
            TargetError::Corrupt(format!(
                "{} is not {} hex digits",
                file.display(),
                2 * crate::secret::KEY_LEN
            ))
        })
    }

    /// The leftovers of interrupted runs, as paths relative to the target.
    fn leftover_paths(&self) -> Result<Vec<String>, TargetError> {
        let mut found = Vec::new();
        for name in list_dir(&self.generations_dir())? {
            if name.starts_with(TMP_PREFIX) {
                found.push(format!("{GENERATIONS}/{name}"));
            }
        }
        for name in list_dir(&self.path)? {
            if name.starts_with(CURRENT_TMP_PREFIX) {
                found.push(name);
            }
        }
        for name in list_dir(&self.state_dir())? {
            if name.starts_with(STAMP_TMP_PREFIX)
                || name.starts_with(JOURNAL_TMP_PREFIX)
                || name.starts_with(SECRET_KEY_TMP_PREFIX)
            {
                found.push(format!("{STATE_DIR}/{name}"));
            }
        }
        Ok(found)
    }
}

/// A held `flock` on `.envlock/lock`; the kernel also releases it if the process dies.
#[derive(Debug)]
struct DirLock {
    file: File,
    holder: Holder,
}

impl LockGuard for DirLock {
    fn holder(&self) -> &Holder {
        &self.holder
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Clear the holder first, so that nobody is later shown a finished deployment.
        let _ = self.file.set_len(0);
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

impl Target for DirTarget {
    fn describe(&self) -> String {
        format!("dir {}", self.path.display())
    }

    fn live(&self) -> Result<Live, TargetError> {
        let layout = self.check_layout()?;
        let Some(id) = layout.current else {
            return Ok(Live::default());
        };
        Ok(Live {
            generation: Some(id),
            resources: self.read_generation(id)?,
        })
    }

    fn apply(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &serde_json::Value,
    ) -> Result<GenerationId, TargetError> {
        if let Some(problem) = resources.keys().find_map(|n| resource_name_refusal(n)) {
            return Err(TargetError::Refused(problem));
        }
        let layout = self.require_stamped()?;
        let generations = self.generations_dir();
        ensure_dir(&generations)?;
        let newest = self.generation_ids()?.last().copied();
        let id = newest.max(layout.current).map_or(1, |n| n + 1);
        let tmp = generations.join(format!("{TMP_PREFIX}{id}-{}", std::process::id()));
        remove_any(&tmp)?;
        fs::create_dir(&tmp).map_err(io_err("create directory", &tmp))?;
        // A failed attempt (a full disk) removes what it wrote before it reports the failure,
        // so retries do not pile up partial generations.
        if let Err(e) = self.complete_generation(&tmp, id, resources, private, meta) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        crate::failpoint::hit("dir-before-switch");
        self.switch_current(id)?;
        Ok(id)
    }

    fn drift_of(&self, live: &Live, names: &BTreeSet<String>) -> Result<Drift, TargetError> {
        // `live` is the generation's files as just read: only its checksums are read here.
        let Some(sums) = live
            .generation
            .map(|id| self.sums(id))
            .transpose()?
            .flatten()
        else {
            return Ok(Drift::default());
        };
        Ok(Drift::between(
            &sums,
            &live.resources,
            names,
            |sum, bytes| super::sha256_hex(bytes) == *sum,
        ))
    }

    fn drift(&self) -> Result<Drift, TargetError> {
        let layout = self.check_layout()?;
        let Some(id) = layout.current else {
            return Ok(Drift::default());
        };
        let Some(sums) = self.sums(id)? else {
            return Ok(Drift::default());
        };
        let live = self.read_generation(id)?;
        let mut drift = Drift {
            checked: true,
            ..Drift::default()
        };
        for (name, sum) in &sums {
            match live.get(name) {
                None => drift.removed.push(name.clone()),
                Some(bytes) if super::sha256_hex(bytes) != *sum => drift.edited.push(name.clone()),
                Some(_) => {}
            }
        }
        drift.added = live
            .keys()
            .filter(|n| !sums.contains_key(*n))
            .cloned()
            .collect();
        Ok(drift)
    }

    fn activate(&self, id: GenerationId) -> Result<(), TargetError> {
        self.require_stamped()?;
        if !self.generation_ids()?.contains(&id) {
            return Err(TargetError::NoGeneration(id));
        }
        // Never make a generation live that could not be read back.
        self.read_generation(id)?;
        self.switch_current(id)
    }

    fn deactivate(&self) -> Result<(), TargetError> {
        let layout = self.require_stamped()?;
        if layout.current.is_none() {
            return Ok(());
        }
        let current = self.path.join(CURRENT);
        fs::remove_file(&current).map_err(io_err("remove", &current))?;
        sync_dir(&self.path)
    }
}

impl crate::target::store::StateStore for DirTarget {
    fn stamp(&self) -> Result<StampState, TargetError> {
        let layout = self.check_layout()?;
        if !layout.exists {
            return Ok(StampState::Absent);
        }
        if let Some(moved) = self.read_private(MOVED_FILE)? {
            let moved: serde_json::Value = serde_json::from_slice(&moved).unwrap_or_default();
            let field = |k: &str| {
                moved
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_owned()
            };
            return Err(TargetError::Refused(format!(
                "the state kept in {} was moved to {} on {} by `deploy migrate`; it is kept \
                 only as a record and nothing is deployed through it any more: deploy from a \
                 clone whose configuration names the new store",
                self.state_dir().display(),
                field("to"),
                field("time")
            )));
        }
        if let Some(stamp) = self.read_stamp()? {
            return Ok(StampState::Stamped(stamp));
        }
        let mut entries = list_dir(&self.path)?;
        // Taking the lock creates `.envlock/lock` before the stamp is checked.
        if entries.iter().any(|n| n == STATE_DIR) && self.state_dir_is_bare()? {
            entries.retain(|n| n != STATE_DIR);
        }
        if entries.is_empty() {
            return Ok(StampState::Absent);
        }
        let total = entries.len();
        entries.truncate(MAX_LISTED);
        Ok(StampState::Unstamped { entries, total })
    }

    fn write_stamp(&self, stamp: &Stamp) -> Result<(), TargetError> {
        match self.stamp()? {
            StampState::Absent => {}
            StampState::Stamped(old) if old.same_owner(stamp) => {}
            StampState::Stamped(old) => {
                return Err(TargetError::Refused(format!(
                    "{} is stamped for environment `{}` (account {}); refusing to re-stamp it \
                     for `{}` (account {})",
                    self.path.display(),
                    old.environment,
                    old.account,
                    stamp.environment,
                    stamp.account
                )));
            }
            StampState::Unstamped { .. } => {
                return Err(TargetError::Refused(format!(
                    "{} is not empty and has no stamp; refusing to adopt it",
                    self.path.display()
                )));
            }
        }
        let state = self.state_dir();
        ensure_dir(&state)?;
        let mut bytes = serde_json::to_vec_pretty(stamp)
            .map_err(|e| TargetError::Corrupt(format!("cannot serialise the stamp: {e}")))?;
        bytes.push(b'\n');
        let tmp = state.join(format!("{STAMP_TMP_PREFIX}{}", std::process::id()));
        remove_any(&tmp)?;
        write_new_synced(&tmp, &bytes)?;
        let file = self.stamp_path();
        fs::rename(&tmp, &file).map_err(io_err("rename into place", &file))?;
        sync_dir(&state)
    }

    fn lock(&self, holder: &Holder) -> Result<Box<dyn LockGuard>, TargetError> {
        self.check_layout()?;
        self.check_owners()?;
        let state = self.state_dir();
        ensure_dir(&state)?;
        let path = state.join(LOCK_FILE);
        if lstat(&path)?.is_some_and(|m| !m.is_file()) {
            return Err(TargetError::Refused(format!(
                "{} is not a regular file (a symlink?); envlock only ever makes it a file",
                path.display()
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        for _ in 0..LOCK_READ_TRIES {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    let mut bytes = serde_json::to_vec(holder).map_err(|e| {
                        TargetError::Corrupt(format!("cannot serialise the lock holder: {e}"))
                    })?;
                    bytes.push(b'\n');
                    // Dropping `file` on an error below releases the lock.
                    file.set_len(0).map_err(io_err("truncate", &path))?;
                    file.write_all_at(&bytes, 0)
                        .map_err(io_err("write", &path))?;
                    file.sync_all().map_err(io_err("fsync", &path))?;
                    return Ok(Box::new(DirLock {
                        file,
                        holder: holder.clone(),
                    }));
                }
                Err(e) if e == Errno::WOULDBLOCK || e == Errno::AGAIN => {
                    // Through the descriptor opened above, never a path that could have changed.
                    let mut bytes = Vec::new();
                    (&file)
                        .seek(SeekFrom::Start(0))
                        .and_then(|_| (&file).read_to_end(&mut bytes))
                        .map_err(io_err("read", &path))?;
                    if let Ok(other) = serde_json::from_slice::<Holder>(&bytes) {
                        return Err(TargetError::Locked(other));
                    }
                    std::thread::sleep(LOCK_READ_PAUSE);
                }
                Err(e) => return Err(io_err("lock", &path)(e.into())),
            }
        }
        Err(TargetError::Locked(Holder::unknown()))
    }

    fn lock_holder(&self) -> Result<Option<Holder>, TargetError> {
        self.check_layout()?;
        let path = self.state_dir().join(LOCK_FILE);
        if !lstat(&path)?.is_some_and(|m| m.is_file()) {
            return Ok(None);
        }
        // Read only, never `flock`: even a moment's shared lock could make a deployer's
        // `lock` fail. A released lock is emptied before it is unlocked.
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let Ok(holder) = serde_json::from_slice::<Holder>(&bytes) else {
            return Ok(Some(Holder::unknown()));
        };
        Ok(holder_alive(&holder).then_some(holder))
    }

    fn read_journal(&self) -> Result<Option<Vec<u8>>, TargetError> {
        let file = self.state_dir().join(JOURNAL_FILE);
        match lstat(&file)? {
            None => Ok(None),
            Some(m) if m.is_file() => fs::read(&file).map(Some).map_err(io_err("read", &file)),
            Some(_) => Err(TargetError::Refused(format!(
                "{} is not a regular file (a symlink?); envlock only ever makes it a file",
                file.display()
            ))),
        }
    }

    fn write_journal(&self, bytes: &[u8]) -> Result<(), TargetError> {
        self.require_stamped()?;
        let state = self.state_dir();
        let tmp = state.join(format!("{JOURNAL_TMP_PREFIX}{}", std::process::id()));
        remove_any(&tmp)?;
        write_new_synced(&tmp, bytes)?;
        let file = state.join(JOURNAL_FILE);
        fs::rename(&tmp, &file).map_err(io_err("rename into place", &file))?;
        sync_dir(&state)
    }

    fn clear_journal(&self) -> Result<(), TargetError> {
        let state = self.state_dir();
        let file = state.join(JOURNAL_FILE);
        match fs::remove_file(&file) {
            Ok(()) => sync_dir(&state),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &file)(e)),
        }
    }

    fn state_location(&self, item: StateItem) -> String {
        let file = match item {
            StateItem::Stamp => STAMP_FILE,
            StateItem::Journal => JOURNAL_FILE,
            StateItem::Log => LOG_FILE,
        };
        self.state_dir().join(file).display().to_string()
    }

    fn secret_key(&self) -> Result<Option<Vec<u8>>, TargetError> {
        if !self.check_layout()?.exists {
            return Ok(None);
        }
        self.read_secret_key()
    }

    fn create_secret_key(&self) -> Result<Vec<u8>, TargetError> {
        self.require_stamped()?;
        if let Some(key) = self.read_secret_key()? {
            return Ok(key);
        }
        let key = crate::secret::random_key()
            .map_err(io_err("get random bytes for", &self.state_dir()))?;
        let state = self.state_dir();
        let tmp = state.join(format!("{SECRET_KEY_TMP_PREFIX}{}", std::process::id()));
        remove_any(&tmp)?;
        let mut text = crate::secret::hex(&key);
        text.push('\n');
        write_new_synced_mode(&tmp, text.as_bytes(), PRIVATE_MODE)?;
        let file = state.join(SECRET_KEY_FILE);
        // A hard link never replaces an existing key: whoever linked first wins.
        let linked = fs::hard_link(&tmp, &file);
        remove_any(&tmp)?;
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &file)(e)),
        }
        sync_dir(&state)?;
        self.read_secret_key()?
            .ok_or_else(|| TargetError::Corrupt(format!("{} vanished", file.display())))
    }

    fn describe_state(&self) -> String {
        Target::describe(self)
    }

    fn read_blob(&self, name: &str) -> Result<Option<Vec<u8>>, TargetError> {
        self.read_private(name)
    }

    fn write_blob(&self, name: &str, bytes: &[u8]) -> Result<(), TargetError> {
        self.write_private(name, bytes)
    }

    fn clear_blob(&self, name: &str) -> Result<(), TargetError> {
        self.remove_private(name)
    }
}

impl crate::target::store::GenerationStore for DirTarget {
    fn live_generation(&self) -> Result<Option<GenerationId>, TargetError> {
        Ok(self.check_layout()?.current)
    }

    fn resources(&self, id: GenerationId) -> Result<BTreeMap<String, Vec<u8>>, TargetError> {
        self.check_layout()?;
        if !self.generation_ids()?.contains(&id) {
            return Err(TargetError::NoGeneration(id));
        }
        self.read_generation(id)
    }

    fn generations(&self) -> Result<Vec<GenerationInfo>, TargetError> {
        let layout = self.check_layout()?;
        self.generation_ids()?
            .into_iter()
            .map(|id| self.generation_info(id, layout.current))
            .collect()
    }

    fn generation(&self, id: GenerationId) -> Result<Option<GenerationInfo>, TargetError> {
        let layout = self.check_layout()?;
        if !self.generation_ids()?.contains(&id) {
            return Ok(None);
        }
        self.generation_info(id, layout.current).map(Some)
    }

    fn newest_generation(&self) -> Result<Option<GenerationId>, TargetError> {
        self.check_layout()?;
        Ok(self.generation_ids()?.last().copied())
    }

    fn prune(&self, keep: usize) -> Result<Pruned, TargetError> {
        let layout = self.require_stamped()?;
        let generations = self.generations_dir();
        let leftovers = self.remove_leftovers()?;
        let ids = self.generation_ids()?;
        let mut kept: BTreeSet<GenerationId> = ids.iter().rev().take(keep).copied().collect();
        kept.extend(layout.current);
        let mut removed = Vec::new();
        for id in ids.into_iter().filter(|id| !kept.contains(id)) {
            // Rename first, so that a crash mid-delete never leaves a half generation behind.
            let dir = self.generation_dir(id);
            let doomed = generations.join(format!("{TMP_PREFIX}prune-{id}-{}", std::process::id()));
            remove_any(&doomed)?;
            fs::rename(&dir, &doomed).map_err(io_err("rename for removal", &dir))?;
            crate::failpoint::hit("dir-prune-mid");
            fs::remove_dir_all(&doomed).map_err(io_err("remove", &doomed))?;
            removed.push(id);
        }
        if !removed.is_empty() || !leftovers.is_empty() {
            if lstat(&generations)?.is_some() {
                sync_dir(&generations)?;
            }
            sync_dir(&self.path)?;
        }
        Ok(Pruned {
            generations: removed,
            leftovers,
        })
    }

    fn leftovers(&self) -> Result<Vec<String>, TargetError> {
        if !self.check_layout()?.exists {
            return Ok(Vec::new());
        }
        self.leftover_paths()
    }

    fn remove_leftovers(&self) -> Result<Vec<String>, TargetError> {
        if !self.check_layout()?.exists {
            return Ok(Vec::new());
        }
        let found = self.leftover_paths()?;
        for rel in &found {
            remove_any(&self.path.join(rel))?;
        }
        if !found.is_empty() {
            for dir in [self.generations_dir(), self.state_dir()] {
                if lstat(&dir)?.is_some_and(|m| m.is_dir()) {
                    sync_dir(&dir)?;
                }
            }
            sync_dir(&self.path)?;
        }
        Ok(found)
    }

    fn mark_failed(&self, id: GenerationId, reason: &str) -> Result<(), TargetError> {
        self.require_stamped()?;
        if !self.generation_ids()?.contains(&id) {
            return Err(TargetError::NoGeneration(id));
        }
        let dir = self.generation_dir(id);
        let tmp = dir.join(format!("{FAILED_FILE}.tmp-{}", std::process::id()));
        remove_any(&tmp)?;
        write_new_synced(&tmp, format!("{reason}\n").as_bytes())?;
        let file = dir.join(FAILED_FILE);
        fs::rename(&tmp, &file).map_err(io_err("rename into place", &file))?;
        sync_dir(&dir)
    }

    fn discard(&self, id: GenerationId) -> Result<(), TargetError> {
        let layout = self.require_stamped()?;
        if layout.current == Some(id) {
            return Err(TargetError::Refused(format!(
                "generation {id} is live; it cannot be discarded"
            )));
        }
        if !self.generation_ids()?.contains(&id) {
            return Ok(());
        }
        let generations = self.generations_dir();
        let dir = self.generation_dir(id);
        let doomed = generations.join(format!("{TMP_PREFIX}discard-{id}-{}", std::process::id()));
        remove_any(&doomed)?;
        fs::rename(&dir, &doomed).map_err(io_err("rename for removal", &dir))?;
        sync_dir(&generations)?;
        fs::remove_dir_all(&doomed).map_err(io_err("remove", &doomed))
    }

    /// A `dir` generation is its files: recording one is applying it.
    fn record(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &serde_json::Value,
    ) -> Result<GenerationId, TargetError> {
        Target::apply(self, resources, private, meta)
    }

    fn make_live(&self, id: Option<GenerationId>) -> Result<(), TargetError> {
        match id {
            Some(id) => Target::activate(self, id),
            None => Target::deactivate(self),
        }
    }
}

impl crate::target::store::LogStore for DirTarget {
    fn log_tail(&self) -> Result<LogTail, TargetError> {
        let path = self.state_dir().join(LOG_FILE);
        let mut file = match self.open_log(&path)? {
            Some(f) => f,
            None => return Ok(LogTail::default()),
        };
        let len = file.metadata().map_err(io_err("inspect", &path))?.len();
        // Read backwards in growing windows until the window holds the last complete line.
        let mut window: u64 = 4096;
        loop {
            let start = len.saturating_sub(window);
            let mut buf = Vec::with_capacity((len - start) as usize);
            file.seek(SeekFrom::Start(start))
                .map_err(io_err("seek in", &path))?;
            (&mut file)
                .take(len - start)
                .read_to_end(&mut buf)
                .map_err(io_err("read", &path))?;
            let end = buf.iter().rposition(|&b| b == b'\n');
            let incomplete = match end {
                Some(e) => buf.len() - e - 1,
                None if start == 0 => buf.len(),
                None => {
                    window *= 4;
                    continue;
                }
            };
            let Some(e) = end else {
                return Ok(LogTail {
                    last: None,
                    complete_len: 0,
                    incomplete,
                });
            };
            match buf[..e].iter().rposition(|&b| b == b'\n') {
                Some(b) => {
                    return Ok(LogTail {
                        last: Some(buf[b + 1..e].to_vec()),
                        complete_len: start + e as u64 + 1,
                        incomplete,
                    });
                }
                None if start == 0 => {
                    return Ok(LogTail {
                        last: Some(buf[..e].to_vec()),
                        complete_len: e as u64 + 1,
                        incomplete,
                    });
                }
                None => window *= 4,
            }
        }
    }

    fn log_read(&self) -> Result<Option<Vec<u8>>, TargetError> {
        let path = self.state_dir().join(LOG_FILE);
        let Some(mut file) = self.open_log(&path)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        Ok(Some(bytes))
    }

    fn log_open(&self) -> Result<Option<Box<dyn std::io::Read + Send>>, TargetError> {
        let path = self.state_dir().join(LOG_FILE);
        Ok(self
            .open_log(&path)?
            .map(|f| Box::new(f) as Box<dyn std::io::Read + Send>))
    }

    fn log_append(&self, line: &[u8]) -> Result<(), TargetError> {
        self.require_stamped()?;
        let state = self.state_dir();
        let path = state.join(LOG_FILE);
        let created = lstat(&path)?.is_none();
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(io_err("open for appending", &path))?;
        // The whole line in one call (a line fits one write(2) in practice); an incomplete
        // line left by a crash is found by the next run (see `crate::log`). One cut short by
        // an error (a full disk) is cut back here: the log stays as it was.
        let before = file.metadata().map_err(io_err("inspect", &path))?.len();
        if let Err(e) = write_line(&mut file, line).and_then(|()| file.sync_data()) {
            return Err(cut_back(&file, before, &path, e));
        }
        if created {
            sync_dir(&state)?;
        }
        self.write_log_checkpoint(&file);
        Ok(())
    }

    fn log_untouched(&self) -> Result<bool, TargetError> {
        let path = self.state_dir().join(LOG_FILE);
        let Some(meta) = lstat(&path)? else {
            return Ok(false);
        };
        let checkpoint = self.state_dir().join(LOG_CHECKPOINT_FILE);
        Ok(read_log_checkpoint(&checkpoint).is_some_and(|c| c == log_fingerprint(&meta)))
    }

    fn log_removed(&self) -> Result<Option<String>, TargetError> {
        let checkpoint = self.state_dir().join(LOG_CHECKPOINT_FILE);
        let Some(was) = read_log_checkpoint(&checkpoint).and_then(|c| checkpoint_size(&c)) else {
            return Ok(None);
        };
        let path = self.state_dir().join(LOG_FILE);
        let now = lstat(&path)?.map_or(0, |m| m.len());
        Ok((now < was).then(|| {
            format!("the log file is {now} bytes, but it was {was} bytes after the last append")
        }))
    }

    fn log_cut(&self, len: u64) -> Result<(), TargetError> {
        self.require_stamped()?;
        let path = self.state_dir().join(LOG_FILE);
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let _ = fs::remove_file(self.state_dir().join(LOG_CHECKPOINT_FILE));
        file.set_len(len).map_err(io_err("truncate", &path))?;
        file.sync_all().map_err(io_err("fsync", &path))
    }
}

/// The log file's identity and last change as `fstat` tells them: any write, truncation,
/// replacement or `chmod` by anyone changes the inode's ctime, which no user can set back.
fn log_fingerprint(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "dev {} ino {} size {} mtime {}.{} ctime {}.{}\n",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// The log checkpoint's text when it is a regular file of the target's own: never follows a
/// symlink, never blocks on a FIFO, reads at most 1 KiB (a checkpoint is one short line).
/// Anything else is no checkpoint, and the whole log is verified: safe, only slower.
fn read_log_checkpoint(path: &Path) -> Option<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(1024).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The log's size that a checkpoint (see [`log_fingerprint`]) recorded.
fn checkpoint_size(checkpoint: &str) -> Option<u64> {
    let mut words = checkpoint.split_whitespace();
    words.find(|w| *w == "size")?;
    words.next()?.parse().ok()
}

/// Append `line` with one `write_all` (failpoint `log-append-enospc`: half of it, then the
/// error a full disk gives).
fn write_line(file: &mut File, line: &[u8]) -> io::Result<()> {
    if crate::failpoint::active("log-append-enospc") {
        file.write_all(&line[..line.len() / 2])?;
        return Err(io::Error::from_raw_os_error(Errno::NOSPC.raw_os_error()));
    }
    file.write_all(line)
}

/// A failed append: truncate the log back to the `len` it had before, made durable, so no
/// partial record stays. The error says whether that worked.
fn cut_back(file: &File, len: u64, path: &Path, err: io::Error) -> TargetError {
    let what = match file.set_len(len).and_then(|()| file.sync_all()) {
        Ok(()) => format!(
            "append a record ({err}; the log was cut back to its previous {len} bytes, as it was) to"
        ),
        Err(cut) => format!(
            "append a record ({err}; cutting the partial record back to {len} bytes failed too: {cut}) to"
        ),
    };
    TargetError::Io {
        what,
        path: path.to_path_buf(),
        source: err,
    }
}

impl DirTarget {
    /// Remember the log's `fstat` after our own append. Best effort: without a checkpoint (or
    /// with a torn one) the next append verifies the whole log, which is safe, only slower.
    fn write_log_checkpoint(&self, file: &File) {
        let checkpoint = self.state_dir().join(LOG_CHECKPOINT_FILE);
        // A new file in place of whatever is there: never written through a symlink (or into
        // a FIFO) that someone put in its place.
        let written = file.metadata().and_then(|m| {
            match fs::remove_file(&checkpoint) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
                .open(&checkpoint)?
                .write_all(log_fingerprint(&m).as_bytes())
        });
        if written.is_err() {
            let _ = fs::remove_file(&checkpoint);
        }
    }

    /// Open the log for reading; `None` when there is none. Refuses a symlink.
    fn open_log(&self, path: &Path) -> Result<Option<File>, TargetError> {
        self.check_layout()?;
        match lstat(path)? {
            None => Ok(None),
            Some(m) if m.is_file() => File::open(path).map(Some).map_err(io_err("open", path)),
            Some(_) => Err(TargetError::Refused(format!(
                "{} is not a regular file (a symlink?); envlock only ever makes it a file",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::store::{GenerationStore, StateStore};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use serde_json::json;

    /// Set in the child process of `lock_is_released_when_its_holder_is_killed`.
    const CHILD_ENV: &str = "ENVLOCK_TEST_LOCK_HOLDER_DIR";

    fn holder(user: &str, pid: u32) -> Holder {
        Holder {
            user: user.into(),
            host: "host-a".into(),
            pid,
            since: "2026-01-02T03:04:05Z".into(),
            environment: "prod".into(),
        }
    }

    fn stamp(env: &str, account: &str) -> Stamp {
        Stamp {
            environment: env.into(),
            account: account.into(),
            created: "2026-01-02T03:04:05Z".into(),
            version: STAMP_VERSION,
        }
    }

    fn resources(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    /// A stamped, empty target in a fresh temp dir.
    fn stamped() -> (tempfile::TempDir, DirTarget) {
        let tmp = tempfile::tempdir().unwrap();
        let target = DirTarget::new(tmp.path().join("t"));
        target.write_stamp(&stamp("prod", "222222222222")).unwrap();
        (tmp, target)
    }

    fn refused(result: Result<impl std::fmt::Debug, TargetError>) -> String {
        match result {
            Err(TargetError::Refused(msg)) => msg,
            other => panic!("expected Refused, got {other:?}"),
        }
    }

    #[test]
    fn absent_target_is_adopted_and_stamp_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a").join("b");
        let target = DirTarget::new(&path);
        assert_eq!(target.stamp().unwrap(), StampState::Absent);
        fs::create_dir_all(&path).unwrap();
        assert_eq!(target.stamp().unwrap(), StampState::Absent);

        let s = stamp("prod", "222222222222");
        target.write_stamp(&s).unwrap();
        assert_eq!(target.stamp().unwrap(), StampState::Stamped(s.clone()));
        assert!(path.join(".envlock/stamp.json").is_file());
        assert_eq!(target.leftovers().unwrap(), Vec::<String>::new());

        // Re-stamping for the same owner is harmless; for another one it is refused.
        target.write_stamp(&s).unwrap();
        let msg = refused(target.write_stamp(&stamp("validation", "111111111111")));
        assert!(msg.contains("`prod`"), "{msg}");
        assert_eq!(target.stamp().unwrap(), StampState::Stamped(s));
    }

    #[test]
    fn taking_the_lock_does_not_make_a_target_non_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let target = DirTarget::new(tmp.path().join("t"));
        let guard = target.lock(&holder("alice", 1)).unwrap();
        assert!(tmp.path().join("t/.envlock/lock").is_file());
        assert_eq!(target.stamp().unwrap(), StampState::Absent);
        target.write_stamp(&stamp("prod", "2")).unwrap();
        drop(guard);
    }

    #[test]
    fn unstamped_non_empty_target_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t");
        fs::create_dir(&path).unwrap();
        for i in 0..12 {
            fs::write(path.join(format!("file{i:02}")), "x").unwrap();
        }
        let target = DirTarget::new(&path);
        match target.stamp().unwrap() {
            StampState::Unstamped { entries, total } => {
                assert_eq!(total, 12);
                assert_eq!(entries.len(), 10);
                assert_eq!(entries[0], "file00");
            }
            other => panic!("expected Unstamped, got {other:?}"),
        }
        refused(target.write_stamp(&stamp("prod", "2")));
        refused(target.apply(
            &resources(&[("a", "x = 1\n")]),
            &BTreeSet::new(),
            &json!({}),
        ));
        assert!(!path.join(".envlock").exists());
        assert!(!path.join("generations").exists());

        // An `.envlock` with more than a lock file in it is not "empty" either.
        let other = DirTarget::new(tmp.path().join("u"));
        fs::create_dir_all(tmp.path().join("u/.envlock")).unwrap();
        fs::write(tmp.path().join("u/.envlock/log.jsonl"), "{}\n").unwrap();
        assert!(matches!(
            other.stamp().unwrap(),
            StampState::Unstamped { entries, .. } if entries == [".envlock"]
        ));
    }

    #[test]
    fn unreadable_stamp_is_corrupt() {
        let (_tmp, target) = stamped();
        fs::write(target.state_dir().join("stamp.json"), "{not json").unwrap();
        assert!(matches!(target.stamp(), Err(TargetError::Corrupt(_))));
    }

    #[test]
    fn symlinked_target_path_is_refused() {
        let (tmp, other) = stamped();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(other.path(), &link).unwrap();
        let target = DirTarget::new(&link);
        let msg = refused(target.stamp());
        assert!(msg.contains("is a symlink to"), "{msg}");
        assert!(msg.contains(&other.path().display().to_string()), "{msg}");
        refused(target.lock(&holder("alice", 1)));
        refused(target.live());
        refused(target.write_stamp(&stamp("prod", "222222222222")));
    }

    #[test]
    fn symlinks_leading_out_of_the_target_are_refused() {
        let (tmp, target) = stamped();
        let outside = tmp.path().join("outside");
        fs::create_dir_all(outside.join("00000001")).unwrap();

        // `current` pointing anywhere but generations/<id>.
        let current = target.path().join("current");
        std::os::unix::fs::symlink(&outside, &current).unwrap();
        let msg = refused(target.stamp());
        assert!(msg.contains(&outside.display().to_string()), "{msg}");
        fs::remove_file(&current).unwrap();
        std::os::unix::fs::symlink("generations/../../outside/00000001", &current).unwrap();
        refused(target.stamp());
        fs::remove_file(&current).unwrap();

        // A generation directory that is itself a symlink.
        fs::create_dir(target.path().join("generations")).unwrap();
        std::os::unix::fs::symlink(
            outside.join("00000001"),
            target.path().join("generations/00000001"),
        )
        .unwrap();
        std::os::unix::fs::symlink("generations/00000001", &current).unwrap();
        let msg = refused(target.live());
        assert!(msg.contains("outside"), "{msg}");
        fs::remove_file(&current).unwrap();
        fs::remove_file(target.path().join("generations/00000001")).unwrap();
        fs::remove_dir(target.path().join("generations")).unwrap();

        // `generations` and `.envlock` must be real directories.
        std::os::unix::fs::symlink(&outside, target.path().join("generations")).unwrap();
        refused(target.stamp());
        fs::remove_file(target.path().join("generations")).unwrap();
        assert!(matches!(target.stamp(), Ok(StampState::Stamped(_))));

        let (_tmp2, second) = stamped();
        fs::remove_dir_all(second.state_dir()).unwrap();
        std::os::unix::fs::symlink(target.state_dir(), second.state_dir()).unwrap();
        refused(second.stamp());
        refused(second.lock(&holder("alice", 1)));
    }

    #[test]
    fn a_large_generation_is_written_with_one_syncfs_and_drift_is_seen() {
        let (_tmp, target) = stamped();
        let many: BTreeMap<String, Vec<u8>> = (0..FSYNC_EACH_MAX * 2)
            .map(|i| (format!("r{i:04}"), format!("n = {i}\n").into_bytes()))
            .collect();
        let id = target.apply(&many, &BTreeSet::new(), &json!({})).unwrap();
        assert_eq!(target.live().unwrap().resources, many);
        assert_eq!(
            target.drift().unwrap(),
            Drift {
                checked: true,
                ..Drift::default()
            }
        );

        let dir = target.generation_dir(id);
        fs::write(dir.join("r0001.toml"), "n = 999\n").unwrap();
        fs::remove_file(dir.join("r0002.toml")).unwrap();
        fs::write(dir.join("extra.toml"), "x = 1\n").unwrap();
        let drift = target.drift().unwrap();
        assert_eq!(drift.edited, ["r0001"]);
        assert_eq!(drift.removed, ["r0002"]);
        assert_eq!(drift.added, ["extra"]);
    }

    #[test]
    fn a_generation_is_read_back_byte_for_byte_on_all_cores() {
        let (_tmp, target) = stamped();
        // Above PARALLEL_MIN, with empty, small and large files (a large one is read in more
        // than one call when the kernel returns less).
        let many: BTreeMap<String, Vec<u8>> = (0..PARALLEL_MIN + 44)
            .map(|i| {
                let bytes = match i % 3 {
                    0 => Vec::new(),
                    1 => format!("n = {i}\n").into_bytes(),
                    _ => format!("s = \"{}\"\n", "x".repeat(i * 700)).into_bytes(),
                };
                (format!("r{i:04}"), bytes)
            })
            .collect();
        let private: BTreeSet<String> = ["r0001".to_owned()].into();
        let id = target.apply(&many, &private, &json!({})).unwrap();
        assert_eq!(target.live().unwrap().resources, many);
        let dir = target.generation_dir(id);
        let mode = |name: &str| fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("r0001.toml"), PRIVATE_MODE & !umask());
        assert_eq!(mode("r0002.toml"), DEFAULT_MODE & !umask());
    }

    #[test]
    fn reading_a_generation_leaves_its_access_times_alone() {
        let (_tmp, target) = stamped();
        let one: BTreeMap<String, Vec<u8>> = [("app".to_owned(), b"n = 1\n".to_vec())].into();
        let id = target.apply(&one, &BTreeSet::new(), &json!({})).unwrap();
        let file = target.generation_dir(id).join("app.toml");
        // Older than the modification: any plain read would update it (relatime).
        let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(86_400);
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(old))
            .unwrap();
        assert_eq!(target.live().unwrap().resources, one);
        assert_eq!(fs::metadata(&file).unwrap().accessed().unwrap(), old);
    }

    fn umask() -> u32 {
        let old = rustix::process::umask(Mode::from_raw_mode(0o022));
        rustix::process::umask(old);
        old.bits()
    }

    #[test]
    fn a_generation_holding_anything_but_resource_files_is_refused() {
        let (tmp, target) = stamped();
        let one: BTreeMap<String, Vec<u8>> = [("app".to_owned(), b"n = 1\n".to_vec())].into();
        let id = target.apply(&one, &BTreeSet::new(), &json!({})).unwrap();
        let dir = target.generation_dir(id);
        let corrupt = |what: &str| match target.live() {
            Err(TargetError::Corrupt(msg)) => {
                assert!(msg.contains(what), "{msg}");
                msg
            }
            other => panic!("expected Corrupt, got {other:?}"),
        };

        // A resource swapped for a symlink to a file outside the target.
        let outside = tmp.path().join("outside.toml");
        fs::write(&outside, "secret = 1\n").unwrap();
        fs::remove_file(dir.join("app.toml")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("app.toml")).unwrap();
        let msg = refused(target.live());
        assert!(msg.contains("is a symlink to"), "{msg}");
        fs::remove_file(dir.join("app.toml")).unwrap();

        // A FIFO is not waited on, a directory is not a file.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("app.toml"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        corrupt("app.toml is not a file");
        fs::remove_file(dir.join("app.toml")).unwrap();
        fs::create_dir(dir.join("app.toml")).unwrap();
        corrupt("app.toml is not a file");
        fs::remove_dir(dir.join("app.toml")).unwrap();

        // Anything that is not `<resource>.toml`.
        fs::write(dir.join("app.toml"), "n = 1\n").unwrap();
        for name in ["README", ".hidden.toml", "bad name.toml"] {
            fs::write(dir.join(name), "x").unwrap();
            corrupt("unexpected entry");
            fs::remove_file(dir.join(name)).unwrap();
        }
        assert_eq!(target.live().unwrap().resources, one);
    }

    #[test]
    fn journal_is_replaced_atomically_and_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let unstamped = DirTarget::new(tmp.path().join("u"));
        assert_eq!(unstamped.read_journal().unwrap(), None);
        refused(unstamped.write_journal(b"{}"));

        let (_tmp, target) = stamped();
        assert_eq!(target.read_journal().unwrap(), None);
        target.write_journal(b"first").unwrap();
        target.write_journal(b"second").unwrap();
        assert_eq!(
            target.read_journal().unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(target.leftovers().unwrap(), Vec::<String>::new());
        target.clear_journal().unwrap();
        target.clear_journal().unwrap();
        assert_eq!(target.read_journal().unwrap(), None);
    }

    #[test]
    fn deactivate_leaves_no_generation_live_and_keeps_them() {
        let (_tmp, target) = stamped();
        target.deactivate().unwrap();
        let id = target
            .apply(
                &resources(&[("a", "x = 1\n")]),
                &BTreeSet::new(),
                &json!({}),
            )
            .unwrap();
        target.deactivate().unwrap();
        assert_eq!(target.live().unwrap(), Live::default());
        assert!(lstat(&target.path().join("current")).unwrap().is_none());
        assert_eq!(
            target.resources(id).unwrap(),
            resources(&[("a", "x = 1\n")])
        );
        assert!(matches!(
            target.resources(id + 1),
            Err(TargetError::NoGeneration(_))
        ));
        target.activate(id).unwrap();
        assert_eq!(target.live().unwrap().generation, Some(id));
    }

    #[test]
    fn apply_writes_generations_and_switches_current() {
        let (_tmp, target) = stamped();
        assert_eq!(target.live().unwrap(), Live::default());

        let first = resources(&[("asr-worker", "workers = 12\n"), ("web", "port = 80\n")]);
        let id1 = target
            .apply(
                &first,
                &BTreeSet::new(),
                &json!({"commit": "aaa", "created": "2026-01-01T00:00:00Z"}),
            )
            .unwrap();
        assert_eq!(id1, 1);
        let second = resources(&[("asr-worker", "workers = 13\n")]);
        let id2 = target
            .apply(&second, &BTreeSet::new(), &json!({"commit": "bbb"}))
            .unwrap();
        assert_eq!(id2, 2);

        let live = target.live().unwrap();
        assert_eq!(live.generation, Some(2));
        assert_eq!(live.resources, second);
        assert_eq!(
            fs::read_link(target.path().join("current")).unwrap(),
            Path::new("generations/00000002")
        );
        // Readers through `current` see exactly the bytes applied.
        assert_eq!(
            fs::read(target.path().join("current/asr-worker.toml")).unwrap(),
            b"workers = 13\n"
        );
        // The first generation is untouched.
        assert_eq!(
            fs::read(target.path().join("generations/00000001/web.toml")).unwrap(),
            b"port = 80\n"
        );

        let gens = target.generations().unwrap();
        assert_eq!(gens.len(), 2);
        assert_eq!(
            (gens[0].id, gens[0].commit.as_str(), gens[0].live),
            (1, "aaa", false)
        );
        assert_eq!(gens[0].created, "2026-01-01T00:00:00Z");
        assert_eq!(
            (gens[1].id, gens[1].commit.as_str(), gens[1].live),
            (2, "bbb", true)
        );
        assert!(gens[1].created.ends_with('Z'), "{}", gens[1].created);
        assert_eq!(gens[1].meta, json!({"commit": "bbb"}));
        // One generation alone, read without the others.
        assert_eq!(target.generation(2).unwrap().as_ref(), Some(&gens[1]));
        assert_eq!(target.generation(3).unwrap(), None);
        assert_eq!(target.newest_generation().unwrap(), Some(2));
        fs::remove_file(target.path().join("generations/00000001/.meta.json")).unwrap();
        assert_eq!(target.generation(2).unwrap().as_ref(), Some(&gens[1]));
        assert!(matches!(target.generation(1), Err(TargetError::Corrupt(_))));
        fs::write(
            target.path().join("generations/00000001/.meta.json"),
            "{\"commit\": \"aaa\", \"created\": \"2026-01-01T00:00:00Z\"}",
        )
        .unwrap();
        assert_eq!(target.generations().unwrap(), gens);

        target.activate(1).unwrap();
        let live = target.live().unwrap();
        assert_eq!(live.generation, Some(1));
        assert_eq!(live.resources, first);
        assert!(target.generations().unwrap()[0].live);
        assert!(matches!(
            target.activate(7),
            Err(TargetError::NoGeneration(7))
        ));

        // A new apply after a rollback still gets a new number.
        assert_eq!(
            target.apply(&second, &BTreeSet::new(), &json!({})).unwrap(),
            3
        );
        // An empty desired state is a generation too.
        assert_eq!(
            target
                .apply(&BTreeMap::new(), &BTreeSet::new(), &json!({}))
                .unwrap(),
            4
        );
        let live = target.live().unwrap();
        assert_eq!((live.generation, live.resources.len()), (Some(4), 0));
        assert!(target.leftovers().unwrap().is_empty());
    }

    #[test]
    fn unsafe_resource_names_are_refused() {
        let (_tmp, target) = stamped();
        for name in ["../x", "a/b", ".hidden", "a\0b", ""] {
            refused(target.apply(
                &resources(&[(name, "x = 1\n")]),
                &BTreeSet::new(),
                &json!({}),
            ));
        }
        assert!(target.generations().unwrap().is_empty());
    }

    #[test]
    fn changed_generation_is_corrupt() {
        let (_tmp, target) = stamped();
        target
            .apply(
                &resources(&[("a", "x = 1\n")]),
                &BTreeSet::new(),
                &json!({}),
            )
            .unwrap();
        fs::write(target.path().join("generations/00000001/a.toml~"), "").unwrap();
        assert!(matches!(target.live(), Err(TargetError::Corrupt(_))));
    }

    #[test]
    fn prune_keeps_the_newest_and_the_live_generation() {
        let (_tmp, target) = stamped();
        for i in 1..=5 {
            let body = format!("n = {i}\n");
            target
                .apply(&resources(&[("a", &body)]), &BTreeSet::new(), &json!({}))
                .unwrap();
        }
        target.activate(1).unwrap();
        let pruned = target.prune(2).unwrap();
        assert_eq!(pruned.generations, vec![2, 3]);
        assert!(pruned.leftovers.is_empty());
        let ids: Vec<_> = target.generations().unwrap().iter().map(|g| g.id).collect();
        assert_eq!(ids, vec![1, 4, 5]);
        assert_eq!(
            target.live().unwrap().resources,
            resources(&[("a", "n = 1\n")])
        );
        assert_eq!(target.prune(2).unwrap(), Pruned::default());
        // Nothing to prune in a target without generations.
        let (_tmp2, empty) = stamped();
        assert_eq!(empty.prune(3).unwrap(), Pruned::default());
    }

    #[test]
    fn crash_leftovers_are_ignored_reported_and_pruned() {
        let (_tmp, target) = stamped();
        target
            .apply(
                &resources(&[("a", "x = 1\n")]),
                &BTreeSet::new(),
                &json!({}),
            )
            .unwrap();
        // What an apply killed half-way leaves: a partial generation and a new `current` link.
        let partial = target.path().join("generations/.tmp-2-99999");
        fs::create_dir(&partial).unwrap();
        fs::write(partial.join("a.toml"), "x = 2").unwrap();
        std::os::unix::fs::symlink(
            "generations/.tmp-2-99999",
            target.path().join("current.tmp-99999"),
        )
        .unwrap();

        let ids: Vec<_> = target.generations().unwrap().iter().map(|g| g.id).collect();
        assert_eq!(ids, vec![1]);
        assert_eq!(target.live().unwrap().generation, Some(1));
        assert_eq!(
            target.leftovers().unwrap(),
            vec![
                "generations/.tmp-2-99999".to_owned(),
                "current.tmp-99999".to_owned()
            ]
        );
        assert!(matches!(target.stamp(), Ok(StampState::Stamped(_))));

        assert_eq!(
            target
                .apply(
                    &resources(&[("a", "x = 3\n")]),
                    &BTreeSet::new(),
                    &json!({})
                )
                .unwrap(),
            2
        );
        let pruned = target.prune(10).unwrap();
        assert!(pruned.generations.is_empty());
        assert_eq!(pruned.leftovers.len(), 2);
        assert!(!partial.exists());
        assert!(target.leftovers().unwrap().is_empty());
        assert_eq!(
            target.live().unwrap().resources,
            resources(&[("a", "x = 3\n")])
        );
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let target = DirTarget::new(tmp.path().join("t"));
        let first = target.lock(&holder("alice", 4242)).unwrap();
        assert_eq!(first.holder().pid, 4242);

        // Each `lock` opens its own file description, so flock conflicts even in one process.
        match target.lock(&holder("bob", 7)) {
            Err(TargetError::Locked(h)) => assert_eq!(h, holder("alice", 4242)),
            other => panic!(
                "expected Locked, got {:?}",
                other.map(|g| g.holder().clone())
            ),
        }
        let err = target.lock(&holder("bob", 7)).err().unwrap();
        assert!(err.to_string().contains("alice@host-a (pid 4242"), "{err}");
        assert_eq!(err.exit(), crate::error::Exit::Locked);

        drop(first);
        let second = target.lock(&holder("bob", 7)).unwrap();
        let on_disk: Holder =
            serde_json::from_slice(&fs::read(target.state_dir().join("lock")).unwrap()).unwrap();
        assert_eq!(on_disk, holder("bob", 7));
        drop(second);
        assert!(
            fs::read(target.state_dir().join("lock"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn held_lock_with_unreadable_holder_reports_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let target = DirTarget::new(tmp.path().join("t"));
        let _guard = target.lock(&holder("alice", 1)).unwrap();
        fs::write(target.state_dir().join("lock"), "garbage").unwrap();
        match target.lock(&holder("bob", 2)) {
            Err(TargetError::Locked(h)) => assert_eq!(h, Holder::unknown()),
            _ => panic!("expected Locked"),
        }
    }

    /// Kills the child when a test fails half-way.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Not a test on its own: the child of the test below takes the lock and waits to be killed.
    #[test]
    fn lock_holder_child() {
        let Some(dir) = crate::sysenv::var(CHILD_ENV) else {
            return;
        };
        let target = DirTarget::new(&dir);
        let _guard = target.lock(&holder("child", std::process::id())).unwrap();
        fs::write(Path::new(&dir).join("ready"), "").unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn lock_is_released_when_its_holder_is_killed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "target::dir::tests::lock_holder_child",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let start = Instant::now();
        while !dir.join("ready").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "child never took the lock"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let target = DirTarget::new(&dir);
        match target.lock(&holder("parent", 1)) {
            Err(TargetError::Locked(h)) => {
                assert_eq!((h.user.as_str(), h.pid), ("child", child.0.id()));
            }
            _ => panic!("expected the child to hold the lock"),
        }
        child.0.kill().unwrap(); // SIGKILL: no destructor runs in the child
        child.0.wait().unwrap();
        let guard = target.lock(&holder("parent", 1)).unwrap();
        assert_eq!(guard.holder().user, "parent");
    }
}
