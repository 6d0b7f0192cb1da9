//! Durations written as strings: `"500ms"`, `"10s"`, `"2m"`, `"1h 30m"`.

use std::time::Duration;

/// Parse a duration string; the error says what is accepted.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration".into());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{trimmed}` has no unit; write e.g. \"{trimmed}s\" or \"{trimmed}ms\""
        ));
    }
    humantime::parse_duration(trimmed).map_err(|e| format!("`{trimmed}` is not a duration: {e}"))
}

/// Format a duration the way it is written in environment files.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn rejects_bare_numbers_and_junk() {
        assert!(parse("10").unwrap_err().contains("no unit"));
        assert!(parse("soon").is_err());
        assert!(parse("").is_err());
    }
}
