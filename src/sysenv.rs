//! The one place that reads the process environment (clippy bans `std::env::var` elsewhere), so
//! that it is visible at a glance that no variable changes what is deployed or where.
#![allow(clippy::disallowed_methods)]

/// A variable's value when it is set and valid UTF-8.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// True when `NO_COLOR` is set to anything non-empty (https://no-color.org).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// A variable's raw value when it is set (secret values, which may not be UTF-8).
pub fn var_os(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name)
}
