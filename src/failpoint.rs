//! Test-only crash points, compiled in only with the `failpoints` cargo feature.
//!
//! With the feature, `ENVLOCK_FAILPOINT=<name>` makes the process stop at the point called
//! `<name>`: it prints `failpoint <name> reached (pid N)` on stderr and sleeps until it is
//! killed, so that a test can `kill -9` a real `deploy` at that exact instant. With
//! `ENVLOCK_FAILPOINT_RESUME=<path>` as well, it goes on once `<path>` exists instead, so that
//! a test can act on the world (kill an etcd leader, write a key) at that instant. Release builds
//! have no feature and no variable: [`hit`] is an empty inline function.

/// Stop here if `ENVLOCK_FAILPOINT` names this point (feature `failpoints` only).
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::io::Write;
    if crate::sysenv::var("ENVLOCK_FAILPOINT").as_deref() != Some(name) {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "failpoint {name} reached (pid {})", std::process::id());
    let _ = err.flush();
    drop(err);
    if let Some(resume) = crate::sysenv::var_os("ENVLOCK_FAILPOINT_RESUME") {
        let resume = std::path::PathBuf::from(resume);
        while !resume.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        return;
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Stop here if `ENVLOCK_FAILPOINT` names this point (feature `failpoints` only).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// True if `ENVLOCK_FAILPOINT` names this point: the caller simulates a failure there (a full
/// disk mid-write) instead of stopping (feature `failpoints` only).
#[cfg(feature = "failpoints")]
pub fn active(name: &str) -> bool {
    crate::sysenv::var("ENVLOCK_FAILPOINT").as_deref() == Some(name)
}

/// True if `ENVLOCK_FAILPOINT` names this point (feature `failpoints` only).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn active(_name: &str) -> bool {
    false
}
