#!/usr/bin/env python3
"""Generate a deployment log for the log workload of `bench/run`.

usage: gen_log.py OUT_FILE RECORDS ENVIRONMENT ACCOUNT TARGET [SEED]

Writes OUT_FILE (`<target>/.envlock/log.jsonl`): RECORDS records of the hash-chained JSON Lines
format of src/log.rs, written by this independent implementation with hashlib and json, so
that `deploy log verify` accepting the file is itself a check of the format:

  - one line per record: the compact JSON of the record, members in the order `seq, time,
    environment, account, target, action, outcome, commit, config_sha256, operator{user,
    host, ci{}}, changes{add, change, remove}, generation, previous_generation, reason,
    plan_sha256, prev, hash` (serde_json's: no whitespace, UTF-8 rather than \\u escapes,
    `/` unescaped, the CI map's keys sorted like a BTreeMap's);
  - the canonical JSON of a record is its line without the `,"hash":"…"` member; `hash` is the
    lowercase hex SHA-256 of it; `prev` is the previous record's hash (64 zeros for the first);
    `seq` counts from 1.

The values are those of a long-lived busy target (ENVIRONMENT, ACCOUNT and TARGET, the
target as `deploy envs` describes it, e.g. `dir /srv/app`): one adoption, then applies (most
of them applied, some failed, rolled back or refused, with their reasons), no-change
verifications and rollbacks, from people and from CI (GitHub Actions and GitLab CI identity
maps), a new commit every few records, times a few minutes apart with milliseconds, some
non-ASCII text and some saved plans. Deterministic for a given SEED (default 1).

Prints the number of records, the file's size and the head (the last record's hash).
"""

import hashlib
import json
import random
import sys
import time

GENESIS = "0" * 64
# 2025-01-01T00:00:00Z: 1,000,000 records about 90 s apart end in 2027.
START = 1735689600

PEOPLE = [
    ("ana", "laptop-ana"),
    ("bruno", "bruno-mbp.local"),
    ("zoë", "büro-workstation-3"),
    ("chen.wei", "dev-vm-17"),
    ("oncall", "bastion-eu-1"),
]
WORKFLOWS = ["deploy", "deploy-prod", "promote", "nightly-verify"]
ACTORS = ["ana", "bruno", "release-bot", "chen-wei", "renovate[bot]"]

FAILED = [
    "health check failed: `curl -fsS https://{env}.internal.example.com/healthz` exited 22 after {t} s",
    "health check timed out after 30 s: `./scripts/smoke --env {env}`",
    "cannot write the generation: No space left on device (os error 28)",
    "the identity command `aws sts get-caller-identity` failed: exit status 255\n"
    "An error occurred (ExpiredToken) when calling the GetCallerIdentity operation",
]
ROLLED_BACK = [
    "health check failed: `curl -fsS https://{env}.internal.example.com/healthz` exited 7 "
    "after {t} s; rolled back to generation {g}",
    "health check failed: HTTP 503 “upstream not ready” from /readyz — rolled back",
]
REFUSED = [
    "refusing to deploy a stale commit: HEAD {short} is behind origin/main by {n} commits",
    "promotion gate: commit {short} has not been applied and healthy in `staging` yet",
    "the saved plan does not match: \"plan.json\" was made for another commit",
]


def hex_digits(rng, bits):
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def rfc3339_millis(t_ms, _cache={}):
    """`2025-01-01T00:00:00.000Z`, like humantime::format_rfc3339_millis."""
    secs, ms = divmod(t_ms, 1000)
    day, rest = divmod(secs, 86400)
    date = _cache.get(day)
    if date is None:
        date = _cache[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{date}{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"


def operators(rng, environment):
    """A pool of operators: people (no CI map) and CI runs (GitHub Actions, GitLab CI)."""
    out = [{"user": u, "host": h, "ci": {}} for u, h in PEOPLE]
    for i in range(40):
        actor = ACTORS[i % len(ACTORS)]
        run = 8_000_000_000 + rng.getrandbits(28)
        ci = {
            "GITHUB_ACTIONS": "true",
            "GITHUB_ACTOR": actor,
            "GITHUB_REF": "refs/heads/main",
            "GITHUB_REPOSITORY": "example/platform-config",
            "GITHUB_RUN_ATTEMPT": str(1 + i % 3),
            "GITHUB_RUN_ID": str(run),
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_SHA": hex_digits(rng, 160),
            "GITHUB_TRIGGERING_ACTOR": actor,
            "GITHUB_WORKFLOW": WORKFLOWS[i % len(WORKFLOWS)],
        }
        out.append({"user": "runner", "host": f"fv-az{rng.randrange(100, 999)}-{i}", "ci": ci})
    for i in range(10):
        pipeline = 1_200_000 + rng.getrandbits(20)
        job = pipeline * 10 + i
        ci = {
            "CI_COMMIT_REF_NAME": "main",
            "CI_COMMIT_SHA": hex_digits(rng, 160),
            "CI_JOB_ID": str(job),
            "CI_JOB_URL": f"https://gitlab.example.com/platform/config/-/jobs/{job}",
            "CI_PIPELINE_ID": str(pipeline),
            "CI_PROJECT_PATH": "platform/config",
            "GITLAB_CI": "true",
            "GITLAB_USER_LOGIN": ACTORS[i % len(ACTORS)],
        }
        out.append({"user": "gitlab-runner", "host": f"runner-{environment}-{i}", "ci": ci})
    for op in out:  # serde serializes a BTreeMap in key order
        op["ci"] = dict(sorted(op["ci"].items()))
    return out


def main():
    if len(sys.argv) not in (6, 7):
        sys.exit(__doc__)
    out, n, environment, account, target = sys.argv[1:6]
    n = int(n)
    seed = int(sys.argv[6]) if len(sys.argv) == 7 else 1
    if n < 1:
        sys.exit("gen_log.py: RECORDS must be at least 1")
    rng = random.Random(seed)
    ops = operators(rng, environment)
    people, ci_ops = ops[: len(PEOPLE)], ops[len(PEOPLE):]

    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    sha256 = hashlib.sha256
    prev = GENESIS
    t_ms = START * 1000
    commit = hex_digits(rng, 160)
    config = hex_digits(rng, 256)
    live = None  # the live generation
    newest = 0  # the newest generation id
    out_bytes = 0
    buf = []
    with open(out, "wb") as f:
        for seq in range(1, n + 1):
            t_ms += rng.randrange(5_000, 175_000)
            r = rng.random()
            if seq > 1 and rng.random() < 0.3:  # a new commit about every third record
                commit = hex_digits(rng, 160)
                config = hex_digits(rng, 256)
            op = people[rng.randrange(len(people))] if r < 0.15 else ci_ops[rng.randrange(len(ci_ops))]
            add = change = remove = 0
            reason = plan = None
            previous = live
            if seq == 1:
                action, outcome = "adopt", "applied"
                add = rng.randrange(50, 5000)
                newest = live = 1
            elif r < 0.12:  # a deployment that found nothing to change
                action, outcome = "verify", "unchanged"
            elif r < 0.14:  # deploy rollback: the previous generation live again
                action, outcome = "rollback", "applied"
                live = max(1, live - 1)
            else:
                action = "apply"
                add, change, remove = rng.randrange(4), rng.randrange(1, 60), rng.randrange(3)
                k = rng.random()
                if k < 0.90:
                    outcome = "applied"
                    newest += 1
                    live = newest
                elif k < 0.94:
                    outcome = "failed"
                    reason = rng.choice(FAILED).format(env=environment, t=rng.randrange(1, 30))
                elif k < 0.97:
                    outcome = "rolled-back"
                    newest += 1  # the failed generation stays on disk; the previous is live
                    reason = rng.choice(ROLLED_BACK).format(
                        env=environment, t=rng.randrange(1, 30), g=live
                    )
                else:
                    outcome = "refused"
                    add = change = remove = 0
                    reason = rng.choice(REFUSED).format(short=commit[:12], n=rng.randrange(1, 9))
                if outcome != "refused" and rng.random() < 0.05:
                    plan = hex_digits(rng, 256)
            record = {
                "seq": seq,
                "time": rfc3339_millis(t_ms),
                "environment": environment,
                "account": account,
                "target": target,
                "action": action,
                "outcome": outcome,
                "commit": commit,
                "config_sha256": config,
                "operator": op,
                "changes": {"add": add, "change": change, "remove": remove},
                "generation": live,
                "previous_generation": previous,
                "reason": reason,
                "plan_sha256": plan,
                "prev": prev,
            }
            canonical = dumps(record).encode()
            prev = sha256(canonical).hexdigest()
            buf.append(canonical[:-1])
            buf.append(b',"hash":"%s"}\n' % prev.encode())
            if len(buf) >= 16384:
                out_bytes += f.write(b"".join(buf))
                buf.clear()
        out_bytes += f.write(b"".join(buf))
    print(f"{n} records, {out_bytes} bytes, head {prev}")


if __name__ == "__main__":
    main()
