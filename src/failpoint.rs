//! Test-only crash points, compiled in only with the `failpoints` cargo feature.
//!
//! With the feature, `ENVLOCK_FAILPOINT=<name>` makes the process stop at the point called
//! `<name>`: it prints `failpoint <name> reached (pid N)` on stderr and sleeps until it is
//! killed, so that a test can `kill -9` a real `deploy` at that exact instant. Release builds
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
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Stop here if `ENVLOCK_FAILPOINT` names this point (feature `failpoints` only).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
