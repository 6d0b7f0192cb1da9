//! Files read from one commit, and byte spans into them.
//!
//! Every value of an environment remembers the file and byte range it came from, so that any
//! error can point at `file:line:col` even after layers were merged.

use std::ops::Range;

/// Index of a file in [`Sources`].
pub type FileId = usize;

/// A file of the configuration repository as it is at one commit.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the repository root, with `/` separators (`environments/prod.toml`).
    pub path: String,
    /// The file's text. Empty when the file could not be read as UTF-8.
    pub text: String,
}

/// All source files that diagnostics may point into.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, path: impl Into<String>, text: impl Into<String>) -> FileId {
        self.files.push(SourceFile {
            path: path.into(),
            text: text.into(),
        });
        self.files.len() - 1
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id]
    }

    /// Resolve a location to 1-based line and column (columns count characters).
    pub fn line_col(&self, loc: &Loc) -> (usize, usize) {
        line_col(&self.files[loc.file].text, loc.span.start)
    }
}

/// 1-based line and column of byte `offset` in `text` (an offset inside a character counts as
/// that character).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char(text, offset);
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

/// The largest character boundary of `text` at or before `offset` (at most `text.len()`).
pub fn floor_char(text: &str, offset: usize) -> usize {
    let mut i = offset.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest character boundary of `text` at or after `offset` (at most `text.len()`).
pub fn ceil_char(text: &str, offset: usize) -> usize {
    let mut i = offset.min(text.len());
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// A place in a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: FileId,
    pub span: Range<usize>,
}

impl Loc {
    pub fn new(file: FileId, span: Range<usize>) -> Self {
        Loc { file, span }
    }

    /// The start of a file, for problems that concern a whole file.
    pub fn file(file: FileId) -> Self {
        Loc { file, span: 0..0 }
    }
}

/// A value together with where it was written.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub loc: Loc,
}

impl<T> Located<T> {
    pub fn new(value: T, loc: Loc) -> Self {
        Located { value, loc }
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_inside_a_character_count_as_that_character() {
        let text = "a\nmix é = 1";
        // `é` is bytes 6..8 of the text; byte 7 is inside it.
        assert_eq!(line_col(text, 6), (2, 5));
        assert_eq!(line_col(text, 7), (2, 5));
        assert_eq!(line_col(text, 8), (2, 6));
        assert_eq!((floor_char(text, 7), ceil_char(text, 7)), (6, 8));
        assert_eq!(ceil_char(text, 99), text.len());
    }
}
