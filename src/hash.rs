//! SHA-256 of serialized JSON without building the JSON text (or a `serde_json::Value`) first.

use std::io;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// An [`io::Write`] that feeds a SHA-256. serde_json writes in many small pieces (a quote, a
/// key, a colon); they are gathered into blocks before hashing.
pub struct Sha256Writer {
    hasher: Sha256,
    buf: Vec<u8>,
}

const BLOCK: usize = 16 * 1024;

impl Default for Sha256Writer {
    fn default() -> Self {
        Sha256Writer {
            hasher: Sha256::new(),
            buf: Vec::with_capacity(BLOCK),
        }
    }
}

impl Sha256Writer {
    /// The lowercase hex digest of everything written.
    pub fn hex(mut self) -> String {
        self.hasher.update(&self.buf);
        crate::secret::hex(&self.hasher.finalize())
    }
}

impl Sha256Writer {
    #[inline]
    fn take(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > BLOCK {
            self.spill(bytes);
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    #[cold]
    fn spill(&mut self, bytes: &[u8]) {
        self.hasher.update(&self.buf);
        self.buf.clear();
        if bytes.len() >= BLOCK {
            self.hasher.update(bytes);
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }
}

impl io::Write for Sha256Writer {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.take(bytes);
        Ok(bytes.len())
    }

    #[inline]
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.take(bytes);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// SHA-256 of `bytes` as 64 lowercase hex digits, without allocating.
pub fn sha256_hex_bytes(bytes: &[u8]) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0; 64];
    for (i, b) in Sha256::digest(bytes).into_iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// SHA-256 (lowercase hex) of `serde_json::to_vec(value)`, computed without the bytes.
pub fn json_sha256_hex<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut w = Sha256Writer::default();
    serde_json::to_writer(&mut w, value)?;
    Ok(w.hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn streamed_hash_is_the_hash_of_the_bytes() {
        let value = serde_json::json!({
            "b": [1, 2.5, null, true, "x\"y\u{1F600}"],
            "a": {"long": "z".repeat(3 * BLOCK + 17)},
        });
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_eq!(
            json_sha256_hex(&value).unwrap(),
            crate::target::sha256_hex(&bytes)
        );
        // Any split of the input gives the same digest.
        for piece in [1, 7, BLOCK - 1, BLOCK, BLOCK + 1, bytes.len()] {
            let mut w = Sha256Writer::default();
            for chunk in bytes.chunks(piece) {
                w.write_all(chunk).unwrap();
            }
            assert_eq!(
                w.hex(),
                crate::target::sha256_hex(&bytes),
                "pieces of {piece}"
            );
        }
        assert_eq!(
            sha256_hex_bytes(&bytes).as_slice(),
            crate::target::sha256_hex(&bytes).as_bytes()
        );
        assert_eq!(
            Sha256Writer::default().hex(),
            crate::target::sha256_hex(b"")
        );
    }
}
