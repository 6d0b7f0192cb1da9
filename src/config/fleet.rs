//! `[targets.NAME]` and `[rollout]`: an environment that is a fleet of targets, deployed in
//! waves, each wave baked while its signals are read (see `crate::deploy::rollout`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawRollout, RawTarget, RawVerify, RawWave};
use super::{Diagnostic, FileId, Loader, Loc, Target, TargetKind, loc_of, lstr, valid_name};
use crate::signal::{Check, Compare};

/// The targets of a fleet, in the order the rollout reaches them, and how it proceeds.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Wave by wave, in each wave as listed.
    pub members: Vec<Member>,
    pub waves: Vec<Wave>,
    pub verify: Vec<Signal>,
    /// How often the signals are read while a wave bakes.
    pub interval: Duration,
    /// The longest one reading may take.
    pub timeout: Duration,
}

/// One target of a fleet, by the name its `[targets.NAME]` table gives it.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub target: Target,
}

#[derive(Debug, Clone)]
pub struct Wave {
    pub name: String,
    /// Member names.
    pub targets: Vec<String>,
    /// How long the wave's signals must keep passing before the next wave starts.
    pub bake: Duration,
}

/// A verification signal (`$TARGET` in its text is the member's name), and where it is
/// written.
#[derive(Debug, Clone)]
pub struct Signal {
    pub check: Check,
    /// `file:line:col` of the `[[rollout.verify]]` table.
    pub at: String,
}

impl Fleet {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

const ROLLOUT_HINT: &str = "a fleet is `[targets.NAME]` tables and `[[rollout.wave]]` tables \
     naming them in order, e.g. `targets = [\"canary\"]`, `bake = \"5m\"`; see README \"Fleets\"";

impl Loader<'_> {
    /// `[targets.NAME]` and `[rollout]` of environment `name` (`[target]` is absent).
    pub(super) fn fleet(
        &mut self,
        name: &str,
        file: FileId,
        targets: Spanned<BTreeMap<String, Spanned<RawTarget>>>,
        rollout: Option<Spanned<RawRollout>>,
    ) -> Option<Fleet> {
        let at = loc_of(file, &targets);
        let mut parsed = BTreeMap::new();
        let mut ok = true;
        for (member, raw) in targets.into_inner() {
            let loc = loc_of(file, &raw);
            if !valid_name(&member) {
                self.diagnostics.push(
                    Diagnostic::new(
                        "invalid-name",
                        format!("target name `{member}` is not allowed"),
                    )
                    .env(name)
                    .at(loc, "names are lowercase letters, digits and `-`")
                    .hint("name each target like an environment, e.g. [targets.eu-west-1]"),
                );
                ok = false;
                continue;
            }
            match self.target(name, file, raw) {
                Some(t) => {
                    parsed.insert(member, t);
                }
                None => ok = false,
            }
        }
        if parsed.is_empty() && ok {
            self.diagnostics.push(
                Diagnostic::new("missing-field", "`[targets]` names no target")
                    .env(name)
                    .at(at.clone(), "empty")
                    .hint(ROLLOUT_HINT),
            );
            return None;
        }
        // Reported whatever else is wrong: a clash is a safety problem.
        let apart = self.members_apart(name, &parsed);
        let (waves, verify, interval, timeout) = match rollout {
            Some(r) => self.rollout(name, file, r, &parsed)?,
            None => (
                vec![Wave {
                    name: "all".into(),
                    targets: parsed.keys().cloned().collect(),
                    bake: Duration::ZERO,
                }],
                Vec::new(),
                Duration::from_secs(5),
                Duration::from_secs(5),
            ),
        };
        if !ok || !apart {
            return None;
        }
        let members = waves
            .iter()
            .flat_map(|w| &w.targets)
            .map(|m| Member {
                name: m.clone(),
                target: parsed[m].clone(),
            })
            .collect();
        Some(Fleet {
            members,
            waves,
            verify,
            interval,
            timeout,
        })
    }

    #[allow(clippy::type_complexity)]
    fn rollout(
        &mut self,
        name: &str,
        file: FileId,
        r: Spanned<RawRollout>,
        members: &BTreeMap<String, Target>,
    ) -> Option<(Vec<Wave>, Vec<Signal>, Duration, Duration)> {
        let at = loc_of(file, &r);
        let r = r.into_inner();
        let interval_at = r.interval.map(|s| lstr(file, s));
        let interval = self
            .duration(
                name,
                "interval",
                interval_at.as_ref(),
                Duration::from_secs(5),
            )
            .and_then(|d| self.at_most_a_year(name, "interval", interval_at.as_ref(), d));
        let timeout_at = r.timeout.map(|s| lstr(file, s));
        let timeout = self
            .duration(name, "timeout", timeout_at.as_ref(), Duration::from_secs(5))
            .and_then(|d| self.at_most_a_year(name, "timeout", timeout_at.as_ref(), d));
        let waves = self.waves(name, file, &at, r.wave.unwrap_or_default(), members);
        let mut verify = Vec::new();
        let mut ok = true;
        for v in r.verify.unwrap_or_default() {
            match self.signal(name, file, v) {
                Some(s) => verify.push(s),
                None => ok = false,
            }
        }
        let waves = waves?;
        ok.then_some((waves, verify, interval?, timeout?))
    }

    /// The waves: each member in exactly one; `"*"` is every member no earlier wave named.
    fn waves(
        &mut self,
        name: &str,
        file: FileId,
        at: &Loc,
        raw: Vec<Spanned<RawWave>>,
        members: &BTreeMap<String, Target>,
    ) -> Option<Vec<Wave>> {
        if raw.is_empty() {
            self.diagnostics.push(
                Diagnostic::new("missing-field", "[rollout] has no `[[rollout.wave]]`")
                    .env(name)
                    .at(at.clone(), "no waves")
                    .hint(ROLLOUT_HINT),
            );
            return None;
        }
        let mut placed: BTreeSet<String> = BTreeSet::new();
        let mut waves = Vec::new();
        let mut ok = true;
        let count = raw.len();
        for (i, w) in raw.into_iter().enumerate() {
            let loc = loc_of(file, &w);
            let w = w.into_inner();
            let bake = self.bake(name, file, w.bake);
            let Some(list) = w.targets else {
                self.diagnostics.push(
                    Diagnostic::new("missing-field", "a wave has no `targets`")
                        .env(name)
                        .at(loc, "`targets` is required")
                        .hint(ROLLOUT_HINT),
                );
                ok = false;
                continue;
            };
            let last = i + 1 == count;
            let targets = self.wave_targets(name, file, &loc, list, last, &mut placed, members);
            match (targets, bake) {
                (Some(targets), Some(bake)) => waves.push(Wave {
                    name: w
                        .name
                        .map_or_else(|| format!("wave {}", i + 1), Spanned::into_inner),
                    targets,
                    bake,
                }),
                _ => ok = false,
            }
        }
        let missing: Vec<&String> = members.keys().filter(|m| !placed.contains(*m)).collect();
        if ok && !missing.is_empty() {
            self.diagnostics.push(
                Diagnostic::new(
                    "invalid-rollout",
                    format!(
                        "no wave deploys {}",
                        missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
                    ),
                )
                .env(name)
                .at(at.clone(), "every target must be in a wave")
                .hint("add it to a wave, or end with a wave of `targets = [\"*\"]` (every remaining target)"),
            );
            return None;
        }
        ok.then_some(waves)
    }

    /// A wave's `bake`: a duration, zero allowed (no bake).
    fn bake(
        &mut self,
        name: &str,
        file: FileId,
        bake: Option<Spanned<String>>,
    ) -> Option<Duration> {
        let bake = bake.map(|s| lstr(file, s));
        match &bake {
            Some(b) if super::duration::parse(&b.value) == Ok(Duration::ZERO) => {
                Some(Duration::ZERO)
            }
            b => {
                let d = self.duration(name, "bake", b.as_ref(), Duration::ZERO)?;
                self.at_most_a_year(name, "bake", b.as_ref(), d)
            }
        }
    }

    /// A rollout's durations are counted from now: beyond a year they are a typo (and past the
    /// clock's range, a crash half-way through a rollout).
    fn at_most_a_year(
        &mut self,
        name: &str,
        field: &str,
        v: Option<&super::Located<String>>,
        d: Duration,
    ) -> Option<Duration> {
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        let Some(v) = v.filter(|_| d > YEAR) else {
            return Some(d);
        };
        self.diagnostics.push(
            Diagnostic::new(
                "invalid-duration",
                format!("`{field}` is longer than a year"),
            )
            .env(name)
            .at(v.loc.clone(), "too long")
            .hint("write a duration such as \"10m\" or \"1h 30m\""),
        );
        None
    }

    /// The targets one wave names (`"*"` in the `last`: every one not `placed` yet), each
    /// added to `placed`.
    #[allow(clippy::too_many_arguments)]
    fn wave_targets(
        &mut self,
        name: &str,
        file: FileId,
        loc: &Loc,
        list: super::raw::SList,
        last: bool,
        placed: &mut BTreeSet<String>,
        members: &BTreeMap<String, Target>,
    ) -> Option<Vec<String>> {
        let mut targets = Vec::new();
        let mut ok = true;
        for t in list.into_inner() {
            let t_loc = loc_of(file, &t);
            let t = t.into_inner();
            if t == "*" && last {
                targets.extend(members.keys().filter(|m| !placed.contains(*m)).cloned());
                continue;
            }
            let problem = if t == "*" {
                Some("`\"*\"` (every remaining target) may only be in the last wave".to_owned())
            } else if !members.contains_key(&t) {
                Some(format!("no `[targets.{t}]` in this file"))
            } else if placed.contains(&t) || targets.contains(&t) {
                Some(format!("`{t}` is already in an earlier wave"))
            } else {
                None
            };
            if let Some(problem) = problem {
                self.diagnostics.push(
                    Diagnostic::new("invalid-rollout", problem)
                        .env(name)
                        .at(t_loc, "here")
                        .hint(format!(
                            "the targets are: {}",
                            members.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                );
                ok = false;
                continue;
            }
            targets.push(t);
        }
        placed.extend(targets.iter().cloned());
        if targets.is_empty() && ok {
            self.diagnostics.push(
                Diagnostic::new("invalid-rollout", "a wave with no target")
                    .env(name)
                    .at(loc.clone(), "empty wave")
                    .hint(ROLLOUT_HINT),
            );
            ok = false;
        }
        ok.then_some(targets)
    }

    /// One `[[rollout.verify]]`: exactly one of `http` and `prometheus`.
    fn signal(&mut self, name: &str, file: FileId, v: Spanned<RawVerify>) -> Option<Signal> {
        let loc = loc_of(file, &v);
        let at = self.place(&loc);
        let mut v = v.into_inner();
        let check = match (v.http.take(), v.prometheus.take()) {
            (Some(url), None) => self.http_signal(name, file, url, v),
            (None, Some(url)) => self.prometheus_signal(name, file, &loc, url, v),
            (Some(_), Some(p)) => self.bad_signal(
                name,
                loc_of(file, &p),
                "a signal is either `http` or `prometheus`, not both",
            ),
            (None, None) => self.bad_signal(name, loc, "a signal needs `http` or `prometheus`"),
        }?;
        Some(Signal { check, at })
    }

    fn bad_signal<T>(&mut self, name: &str, loc: Loc, msg: &str) -> Option<T> {
        self.diagnostics.push(
            Diagnostic::new("invalid-verify", msg.to_owned())
                .env(name)
                .at(loc, "here")
                .hint(
                    "a signal is `http = \"http://…/healthz\"` (with optional `status` and \
                     `body`), or `prometheus = \"http://prometheus:9090\"` with `query` and \
                     `compare` such as \"> 0\"",
                ),
        );
        None
    }

    fn http_signal(
        &mut self,
        name: &str,
        file: FileId,
        url: Spanned<String>,
        v: RawVerify,
    ) -> Option<Check> {
        if let Some(q) = v.query.as_ref().or(v.compare.as_ref()) {
            let msg = "`query`/`compare` belong to a `prometheus` signal";
            return self.bad_signal(name, loc_of(file, q), msg);
        }
        let status = match v.status {
            None => 200,
            Some(s) if (100..=599).contains(s.get_ref()) => *s.get_ref() as u16,
            Some(s) => {
                return self.bad_signal(name, loc_of(file, &s), "`status` is not an HTTP status");
            }
        };
        Some(Check::Http {
            url: self.signal_url(name, file, url)?,
            status,
            body: v.body.map(Spanned::into_inner),
        })
    }

    fn prometheus_signal(
        &mut self,
        name: &str,
        file: FileId,
        loc: &Loc,
        url: Spanned<String>,
        v: RawVerify,
    ) -> Option<Check> {
        if let Some(s) = v.status.as_ref() {
            let msg = "`status` belongs to an `http` signal";
            return self.bad_signal(name, loc_of(file, s), msg);
        }
        if let Some(b) = v.body.as_ref() {
            return self.bad_signal(name, loc_of(file, b), "`body` belongs to an `http` signal");
        }
        let Some(query) = v.query else {
            return self.bad_signal(name, loc.clone(), "a `prometheus` signal has no `query`");
        };
        if query.get_ref().trim().is_empty() {
            return self.bad_signal(name, loc_of(file, &query), "`query` is empty");
        }
        let compare = match &v.compare {
            None => None,
            Some(c) => match c.get_ref().parse::<Compare>() {
                Ok(c) => Some(c),
                Err(e) => {
                    return self.bad_signal(name, loc_of(file, c), &format!("`compare`: {e}"));
                }
            },
        };
        Some(Check::Prometheus {
            url: self.signal_url(name, file, url)?,
            query: query.into_inner(),
            compare,
        })
    }

    fn signal_url(&mut self, name: &str, file: FileId, url: Spanned<String>) -> Option<String> {
        let u = url.get_ref();
        if u.starts_with("http://") || u.starts_with("https://") {
            return Some(url.into_inner());
        }
        self.diagnostics.push(
            Diagnostic::new("invalid-verify", format!("`{u}` is not an http(s) URL"))
                .env(name)
                .at(loc_of(file, &url), "here")
                .hint("write the whole URL, e.g. \"http://127.0.0.1:9090\""),
        );
        None
    }

    /// No two members of one fleet may write to the same place (or one inside the other's).
    fn members_apart(&mut self, name: &str, members: &BTreeMap<String, Target>) -> bool {
        let place = |t: &Target| match &t.kind {
            TargetKind::Dir { resolved, .. } => Some(resolved.display().to_string() + "/"),
            TargetKind::Exec { store, .. } => {
                store.dir().map(|(p, _)| p.display().to_string() + "/")
            }
            TargetKind::Etcd {
                endpoints, prefix, ..
            } => Some(format!(
                "etcd:{}:{}",
                endpoints
                    .first()
                    .map(|e| e.value.trim_end_matches('/'))
                    .unwrap_or(""),
                prefix.value
            )),
        };
        let mut places: Vec<(String, &String)> = members
            .iter()
            .filter_map(|(m, t)| place(t).map(|p| (p, m)))
            .collect();
        // Sorted, a place inside another comes right after it (or after another inside it).
        places.sort();
        for pair in places.windows(2) {
            let ((a, ma), (b, mb)) = (&pair[0], &pair[1]);
            if b.starts_with(a.as_str()) {
                self.diagnostics.push(
                    Diagnostic::new(
                        "duplicate-target",
                        format!("targets `{ma}` and `{mb}` of `{name}` write to the same place"),
                    )
                    .env(name)
                    .at(
                        where_written(&members[*mb]),
                        format!("the same place as `{ma}`'s"),
                    )
                    .hint("give each target of a fleet a place of its own")
                    .safety(),
                );
                return false;
            }
        }
        true
    }
}

/// Where a target's place is written: a `dir` target's `path`, else its table.
fn where_written(t: &Target) -> Loc {
    match &t.kind {
        TargetKind::Dir { path, .. } => path.loc.clone(),
        _ => t.loc.clone(),
    }
}
