//! The signatures of the records a chain accepted, checked a batch at a time (see
//! [`super::verify_signatures`] for the rules).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::{Broken, Policy, Problem, Signatures, SignedView, check_signature, signature_problem};
use crate::signing::AllowedSigners;

/// Distinct commits whose policies are kept.
const CACHED: usize = 4096;

/// Where the signature check stands after the batches seen so far.
pub(super) struct SigPass<'p> {
    environment: &'p str,
    policy: &'p mut dyn FnMut(&str) -> Policy,
    /// The policies of the last `CACHED` distinct commits (records of one commit come
    /// together), so the cache does not grow with the log.
    cache: HashMap<String, Policy>,
    cached: VecDeque<String>,
    in_force: Option<Arc<AllowedSigners>>,
    out: Signatures,
    /// The first signature that does not verify.
    bad: Option<Problem>,
    /// The record whose `allowed_signers` cannot be read: nothing after it is judged.
    stop: Option<Problem>,
}

impl<'p> SigPass<'p> {
    pub(super) fn new(environment: &'p str, policy: &'p mut dyn FnMut(&str) -> Policy) -> Self {
        SigPass {
            environment,
            policy,
            cache: HashMap::new(),
            cached: VecDeque::new(),
            in_force: None,
            out: Signatures::default(),
            bad: None,
            stop: None,
        }
    }

    /// The next records, in order, with their lines: which file judges each (in order, cheap),
    /// then the signatures on all cores, until one does not verify.
    pub(super) fn batch(&mut self, lines: &[(usize, &[u8])]) {
        self.out.records += lines.len();
        if self.stop.is_some() || lines.is_empty() {
            return;
        }
        let chunks: Vec<&[(usize, &[u8])]> = lines.chunks(super::VERIFY_CHUNK).collect();
        let views: Vec<Option<SignedView>> = crate::parallel::map(&chunks, |chunk| {
            chunk
                .iter()
                .map(|(_, l)| serde_json::from_slice::<SignedView>(l).ok())
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        let jobs = self.judges(lines, &views);
        if self.bad.is_some() {
            return;
        }
        let environment = self.environment;
        self.bad = crate::parallel::map(&jobs.chunks(256).collect::<Vec<_>>(), |c| {
            c.iter()
                .map(|(n, view, a)| check_signature(*n, view, environment, a.as_deref()))
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .flatten()
        .next();
    }

    /// Each record with the `allowed_signers` in force for it, up to one whose file cannot be
    /// read (`stop`).
    #[allow(clippy::type_complexity)]
    fn judges<'v>(
        &mut self,
        lines: &[(usize, &[u8])],
        views: &'v [Option<SignedView>],
    ) -> Vec<(usize, &'v SignedView, Option<Arc<AllowedSigners>>)> {
        let mut jobs = Vec::with_capacity(lines.len());
        for ((number, _), view) in lines.iter().zip(views) {
            let Some(view) = view else {
                self.stop = Some(Problem {
                    line: *number,
                    seq: None,
                    kind: Broken::Malformed,
                    message: format!("line {number}: its signature members cannot be read"),
                });
                break;
            };
            let commit = view.signers_commit.as_ref().unwrap_or(&view.commit);
            let p = if commit.is_empty() {
                Policy::Absent
            } else {
                self.policy_of(commit)
            };
            match p {
                Policy::Present(a) => self.in_force = Some(a),
                Policy::Absent => {}
                // Before any file was in force, an unsigned record's unknown commit changes
                // nothing.
                Policy::Missing(_) if self.in_force.is_none() && view.signature.is_none() => {}
                Policy::Unreadable(why) | Policy::Missing(why) => {
                    self.stop = Some(signature_problem(*number, view, Broken::Signature, why));
                    break;
                }
            }
            self.out.signed += usize::from(view.signature.is_some());
            jobs.push((*number, view, self.in_force.clone()));
        }
        jobs
    }

    /// `allowed_signers` as of `commit`, asked of `policy` unless recently cached.
    fn policy_of(&mut self, commit: &str) -> Policy {
        if let Some(p) = self.cache.get(commit) {
            return p.clone();
        }
        let p = (self.policy)(commit);
        if self.cached.len() == CACHED
            && let Some(old) = self.cached.pop_front()
        {
            self.cache.remove(&old);
        }
        self.cached.push_back(commit.to_owned());
        self.cache.insert(commit.to_owned(), p.clone());
        p
    }

    /// The verdict: a bad signature comes before the record whose file cannot be read (it
    /// was found among the records before it).
    pub(super) fn finish(mut self) -> Signatures {
        self.out.enforced = self.in_force.is_some();
        self.out.problem = self.bad.or(self.stop);
        self.out
    }
}
