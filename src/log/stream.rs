//! Verifying a log a batch at a time: whole lines are read into a bounded buffer, each batch's
//! lines are hashed on all cores, then walked in order along the chain, and the records the
//! chain accepts have their signatures checked (parsed and verified on all cores) before the
//! next batch is read. Memory holds one batch, whatever the log's length; the answer is the
//! one a verification of the whole log at once gives (a unit test compares them across batch
//! boundaries).

use std::io::{self, BufRead, BufReader, Read};

use sha2::{Digest, Sha256};

use super::sigs::SigPass;
use super::{
    Action, Broken, GENESIS, LineCheck, Policy, Problem, Record, SealedDamage, Signatures,
    VERIFY_CHUNK, Verified, check_one, leading_seq, split_line,
};

/// Bytes of whole lines per batch: 4 MiB per core, at most 64 MiB.
pub(super) fn batch_bytes() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4usize << 20).saturating_mul(cores).min(64 << 20)
}

/// A log read a batch of whole lines at a time.
struct Batches<R> {
    reader: BufReader<R>,
    buf: Vec<u8>,
    limit: usize,
    /// Lines before the batch (its first line's number is this plus one).
    lines: usize,
    /// Bytes and newlines read so far.
    bytes: u64,
    newlines: usize,
}

/// One batch: its lines (without their newlines), the number of the first, and whether the
/// last one has no newline (only at the end of the log: a cut log).
struct Batch<'a> {
    first: usize,
    lines: Vec<&'a [u8]>,
    incomplete_last: bool,
}

impl<R: Read> Batches<R> {
    fn new(reader: R, limit: usize) -> Self {
        Batches {
            reader: BufReader::with_capacity(1 << 16, reader),
            buf: Vec::new(),
            limit: limit.max(1),
            lines: 0,
            bytes: 0,
            newlines: 0,
        }
    }

    /// The next batch, or `None` at the end of the log.
    fn next(&mut self) -> io::Result<Option<Batch<'_>>> {
        self.buf.clear();
        while self.buf.len() < self.limit {
            if self.reader.read_until(b'\n', &mut self.buf)? == 0 {
                break;
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let incomplete_last = self.buf.last() != Some(&b'\n');
        let mut lines: Vec<&[u8]> = self.buf.split(|&b| b == b'\n').collect();
        if !incomplete_last {
            lines.pop(); // the empty string after the final newline
        }
        let first = self.lines + 1;
        self.lines += lines.len();
        self.bytes += self.buf.len() as u64;
        self.newlines += lines.len() - usize::from(incomplete_last);
        Ok(Some(Batch {
            first,
            lines,
            incomplete_last,
        }))
    }
}

/// Where the chain stands: the last good hash and the `seq` expected next.
struct Chain {
    prev: String,
    expected: u64,
    records: usize,
    sealed: Vec<SealedDamage>,
}

impl Chain {
    fn accept(&mut self, seq: u64, hash: &[u8]) {
        self.prev = String::from_utf8_lossy(hash).into_owned();
        self.expected = seq.saturating_add(1);
        self.records += 1;
    }
}

/// Why a line is not the next record: known, or a jump in the sequence, which is `reordered`
/// when the record expected comes later in the log and `dropped` when it never does.
enum Fault {
    Known(Problem),
    Jump {
        line: usize,
        seq: u64,
        expected: u64,
        shown: String,
    },
}

impl Fault {
    fn problem(self, later: bool) -> Problem {
        match self {
            Fault::Known(p) => p,
            Fault::Jump {
                line,
                seq,
                expected,
                shown,
            } => {
                let (kind, what) = if later {
                    (Broken::Reordered, "records are out of order")
                } else {
                    (Broken::Dropped, "a record is missing")
                };
                Problem {
                    line,
                    seq: Some(seq),
                    kind,
                    message: format!(
                        "{shown} (line {line}) follows record {}: {what} (expected record {expected})",
                        expected - 1
                    ),
                }
            }
        }
    }
}

/// Damage found at a line, while the rest of the log is searched for the `seal` record that
/// sets it aside: the bytes from its start, hashed as they go by, and whether the record the
/// chain expected was seen later.
struct Damage {
    fault: Fault,
    /// 1-based line where it starts.
    line: usize,
    hasher: Sha256,
    bytes: u64,
    later: bool,
}

impl Damage {
    fn absorb(&mut self, line: &[u8], incomplete: bool) {
        self.hasher.update(line);
        self.bytes += line.len() as u64;
        if !incomplete {
            self.hasher.update(b"\n");
            self.bytes += 1;
        }
    }
}

/// The chain walked line by line, with the records it accepts handed to `accepted`.
struct Walk {
    chain: Chain,
    damage: Option<Damage>,
}

impl Walk {
    fn new() -> Self {
        Walk {
            chain: Chain {
                prev: GENESIS.to_owned(),
                expected: 1,
                records: 0,
                sealed: Vec::new(),
            },
            damage: None,
        }
    }

    /// One line; true when the chain accepted it as its next record.
    fn step(&mut self, line: &[u8], number: usize, incomplete: bool, check: &LineCheck) -> bool {
        let Some(d) = &mut self.damage else {
            return match chained(line, number, incomplete, check, &self.chain) {
                Ok((seq, hash)) => {
                    self.chain.accept(seq, hash);
                    true
                }
                Err(fault) => {
                    let mut d = Damage {
                        fault,
                        line: number,
                        hasher: Sha256::new(),
                        bytes: 0,
                        later: false,
                    };
                    d.absorb(line, incomplete);
                    self.damage = Some(d);
                    false
                }
            };
        };
        if let Fault::Jump { expected, .. } = d.fault
            && matches!(check, Ok((Some(x), _)) if *x == expected)
        {
            d.later = true;
        }
        match seal_of(d, line, number, incomplete, check, &self.chain) {
            Some((seq, hash, damage)) => {
                self.chain.accept(seq, hash);
                self.chain.sealed.push(damage);
                self.damage = None;
                true
            }
            None => {
                d.absorb(line, incomplete);
                false
            }
        }
    }

    fn finish(self) -> Verified {
        Verified {
            records: self.chain.records,
            head: self.chain.prev,
            problem: self.damage.map(|d| d.fault.problem(d.later)),
            sealed: self.chain.sealed,
        }
    }
}

/// A whole log verified from a reader.
pub struct Streamed {
    pub verified: Verified,
    /// The signatures of the records the chain accepted (when they were asked for).
    pub signatures: Signatures,
    /// Bytes and newlines read.
    pub bytes: u64,
    pub newlines: usize,
}

/// Verify the log `reader` gives, a batch of at most `limit` bytes of lines at a time; with
/// `sigs`, check the signatures of the records the chain accepts as well.
pub(super) fn verify_batched(
    reader: impl Read,
    limit: usize,
    mut sigs: Option<SigPass<'_>>,
) -> io::Result<Streamed> {
    let mut batches = Batches::new(reader, limit);
    let mut walk = Walk::new();
    while let Some(batch) = batches.next()? {
        let checks = check_all(&batch.lines);
        let last = batch.lines.len();
        let mut accepted: Vec<(usize, &[u8])> = Vec::new();
        for (k, (line, check)) in batch.lines.iter().zip(&checks).enumerate() {
            let number = batch.first + k;
            let incomplete = batch.incomplete_last && k + 1 == last;
            if walk.step(line, number, incomplete, check) {
                accepted.push((number, line));
            }
        }
        if let Some(s) = &mut sigs {
            s.batch(&accepted);
        }
    }
    Ok(Streamed {
        verified: walk.finish(),
        signatures: sigs.map(SigPass::finish).unwrap_or_default(),
        bytes: batches.bytes,
        newlines: batches.newlines,
    })
}

/// Every line of a batch checked on its own, chunks of lines on all cores.
fn check_all(lines: &[&[u8]]) -> Vec<LineCheck> {
    let chunks: Vec<&[&[u8]]> = lines.chunks(VERIFY_CHUNK).collect();
    crate::parallel::map(&chunks, |chunk| {
        chunk.iter().map(|line| check_one(line)).collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// Line `number` as the next record of `chain`: its `seq` and hash, or why it is not.
fn chained<'l>(
    line: &'l [u8],
    number: usize,
    incomplete: bool,
    check: &LineCheck,
    chain: &Chain,
) -> Result<(u64, &'l [u8]), Fault> {
    let fail = |seq: Option<u64>, kind: Broken, message: String| {
        Fault::Known(Problem {
            line: number,
            seq,
            kind,
            message,
        })
    };
    if incomplete {
        return Err(fail(
            leading_seq(line),
            Broken::Truncated,
            format!(
                "the log ends in the middle of a record: line {number} has {} bytes and no end of line (the log was cut, or a write was interrupted)",
                line.len()
            ),
        ));
    }
    let (seq, hash_ok) = match check {
        Ok(r) => *r,
        Err(why) => {
            return Err(fail(
                None,
                Broken::Malformed,
                format!("line {number} is not a log record: {why}"),
            ));
        }
    };
    let shown = seq.map_or_else(|| format!("line {number}"), |s| format!("record {s}"));
    if !hash_ok {
        return Err(fail(
            seq,
            Broken::Edited,
            format!("{shown} (line {number}) was edited: its content does not match its hash"),
        ));
    }
    let Some(s) = seq else {
        return Err(fail(
            None,
            Broken::Malformed,
            format!("line {number} has no sequence number"),
        ));
    };
    let parts = split_line(line).expect("checked above");
    in_sequence(s, number, &shown, chain)?;
    if parts.prev != chain.prev.as_bytes() {
        return Err(fail(
            seq,
            Broken::Forged,
            format!(
                "{shown} (line {number}) does not chain to {}: its `prev` is not that record's hash (inserted or forged)",
                if chain.records == 0 {
                    "the start of the log".to_owned()
                } else {
                    format!("record {}", chain.expected - 1)
                }
            ),
        ));
    }
    Ok((s, parts.hash))
}

/// `seq` `s` at line `number` is the one the chain expects, or a fault.
fn in_sequence(s: u64, number: usize, shown: &str, chain: &Chain) -> Result<(), Fault> {
    let expected = chain.expected;
    if s > expected {
        return Err(Fault::Jump {
            line: number,
            seq: s,
            expected,
            shown: shown.to_owned(),
        });
    }
    if s < expected {
        return Err(Fault::Known(Problem {
            line: number,
            seq: Some(s),
            kind: Broken::Reordered,
            message: format!(
                "{shown} (line {number}) comes after record {}: records are out of order (expected record {expected})",
                expected - 1
            ),
        }));
    }
    Ok(())
}

/// Line `number`, when it is the `seal` record that sets aside `d` (the bytes from the damaged
/// line up to this one): its `seq`, hash, and what it sealed.
fn seal_of<'l>(
    d: &Damage,
    line: &'l [u8],
    number: usize,
    incomplete: bool,
    check: &LineCheck,
    chain: &Chain,
) -> Option<(u64, &'l [u8], SealedDamage)> {
    const MARK: &[u8] = b"\"action\":\"seal\"";
    let Ok((Some(seq), true)) = check else {
        return None;
    };
    if incomplete || *seq < chain.expected || !line.windows(MARK.len()).any(|w| w == MARK) {
        return None;
    }
    let r: Record = serde_json::from_slice(line).ok()?;
    let s = r.sealed.as_ref()?;
    let fits = r.action == Action::Seal
        && s.line == d.line
        && r.prev == chain.prev
        && s.head == chain.prev
        && s.damaged_bytes == d.bytes
        && s.damaged_sha256 == hex(&d.hasher.clone().finalize());
    if !fits {
        return None;
    }
    let hash = split_line(line).ok()?.hash;
    let damage = SealedDamage {
        line: s.line,
        seal_line: number,
        seal_seq: *seq,
        kind: s.kind.clone(),
        problem: s.problem.clone(),
        operator: r.operator.display(),
        time: r.time.clone(),
        reason: r.reason.clone().unwrap_or_default(),
    };
    Some((*seq, hash, damage))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// [`verify_batched`] over one batch size for every log: `batch_bytes()`, and the signatures
/// judged by `policy` for `environment`.
pub fn verify_log(
    reader: impl Read,
    environment: &str,
    policy: &mut dyn FnMut(&str) -> Policy,
) -> io::Result<Streamed> {
    verify_batched(
        reader,
        batch_bytes(),
        Some(SigPass::new(environment, policy)),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{log, seal_entry, signed_log, test_signers};
    use super::*;

    fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Logs damaged in each way, at lines that fall on and around batch boundaries.
    fn damaged() -> Vec<(&'static str, Vec<u8>)> {
        let good = log(40);
        let l = lines(&good);
        let edited = {
            let mut l = l.clone();
            let at = l[16].windows(5).position(|w| w == b"\"ana\"").unwrap();
            l[16][at + 1] = b'b';
            l.concat()
        };
        let swapped = {
            let mut l = l.clone();
            l.swap(19, 20);
            l.concat()
        };
        let dropped = {
            let mut l = l.clone();
            l.remove(25);
            l.concat()
        };
        let reordered_far = {
            // Record 11 moved to the end: found out of order 29 lines later.
            let mut l = l.clone();
            let r = l.remove(10);
            l.push(r);
            l.concat()
        };
        let malformed = [&l[..30], &[b"not a record\n".to_vec()][..], &l[30..]]
            .concat()
            .concat();
        let cut = good[..good.len() - 30].to_vec();
        let sealed = {
            let mut d = lines(&edited);
            d.truncate(30);
            let bytes = d.concat();
            let (seal, ..) = super::super::seal_for(&bytes, None, seal_entry())
                .unwrap()
                .unwrap();
            [bytes, seal].concat()
        };
        vec![
            ("intact", good),
            ("edited", edited),
            ("swapped", swapped),
            ("dropped", dropped),
            ("reordered far", reordered_far),
            ("malformed", malformed),
            ("cut", cut),
            ("sealed", sealed),
        ]
    }

    #[test]
    fn a_batch_at_a_time_gives_the_answer_of_the_whole_log() {
        for (what, bytes) in damaged() {
            let whole = verify_batched(&bytes[..], usize::MAX, None).unwrap();
            let record = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
            for limit in [1, 100, record, record + 1, 3 * record - 7, 4096, 10_000] {
                let part = verify_batched(&bytes[..], limit, None).unwrap();
                assert_eq!(
                    part.verified, whole.verified,
                    "{what}, batches of {limit} bytes"
                );
                assert_eq!((part.bytes, part.newlines), (whole.bytes, whole.newlines));
            }
        }
        let answers: Vec<(&str, Option<(usize, Broken)>)> = damaged()
            .iter()
            .map(|(what, b)| {
                let v = verify_batched(&b[..], 1, None).unwrap().verified;
                (*what, v.problem.map(|p| (p.line, p.kind)))
            })
            .collect();
        assert_eq!(
            answers,
            [
                ("intact", None),
                ("edited", Some((17, Broken::Edited))),
                ("swapped", Some((20, Broken::Reordered))),
                ("dropped", Some((26, Broken::Dropped))),
                ("reordered far", Some((11, Broken::Reordered))),
                ("malformed", Some((31, Broken::Malformed))),
                ("cut", Some((40, Broken::Truncated))),
                ("sealed", None),
            ]
        );
    }

    #[test]
    fn signatures_checked_a_batch_at_a_time_find_the_same_first_bad_record() {
        let good = signed_log(12);
        let mark = b"\"signature\":\"-----BEGIN SSH SIGNATURE-----\\n";
        let mut bad = lines(&good);
        let at = bad[8].windows(mark.len()).position(|w| w == mark).unwrap() + mark.len() + 100;
        bad[8][at] = if bad[8][at] == b'A' { b'B' } else { b'A' };
        let bad = bad.concat();
        let allowed =
            std::sync::Arc::new(crate::signing::AllowedSigners::parse(test_signers()).unwrap());
        for bytes in [good, bad] {
            let v = super::super::verify(&bytes);
            let whole = super::super::verify_signatures(&bytes, &v, "prod", &mut |_| {
                Policy::Present(allowed.clone())
            });
            let record = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
            for limit in [1, record, 2 * record + 1, usize::MAX] {
                let mut policy = |_: &str| Policy::Present(allowed.clone());
                let s = verify_batched(&bytes[..], limit, Some(SigPass::new("prod", &mut policy)))
                    .unwrap();
                assert_eq!(s.signatures, whole, "batches of {limit} bytes");
                assert_eq!(s.verified, v);
            }
        }
    }
}
