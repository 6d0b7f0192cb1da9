#!/usr/bin/env python3
"""Timing and reporting half of `bench/run` (which builds, generates and sanity-checks first).

usage: measure.py --workloads check,plan,apply,log,peer --deploy BIN --runs N --out FILE
                  [--source REV]
                  [check:] --parse-only BIN --repo DIR --repo-history DIR
                           --envs N --resources N --commits N --base-commits N
                  [plan:]  --plan-repo DIR --plan-target DIR --plan-desired DIR
                           --plan-resources N --plan-changed N
                  [apply:] --apply-regime KEEP:REPO:TARGET:FLOOR_ROOT (one or more)
                           --apply-desired DIR --apply-resources N --apply-changed N
                           --apply-probe-dir DIR [--apply-settle-max SECONDS]
                  [log:]   --log-repo DIR --log-file FILE --log-records N
                  [peer:]  --peer-repo DIR --peer-target DIR --peer-base DIR --peer-changed DIR
                           --peer-dest DIR --peer-playbook FILE --peer-vars FILE
                           --peer-venv DIR --peer-config FILE --peer-runs N

Every command of a workload is run once as a warm-up, then N times; the runs are interleaved
round-robin (one run of each command per round) so that a drift of the machine's speed affects
every command alike. A command may have an untimed setup command, run before each of its runs
(the apply and peer workloads reset their targets that way). Wall time is measured with
time.perf_counter around spawn + wait, the CPU time of every run comes from wait4(2). Any run
or setup that exits with a status other than the command's expected one (0, or 1 for
`diff -ru` of two directories that differ) aborts the benchmark.
"""

import argparse
import contextlib
import datetime
import filecmp
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def fail(msg):
    print(f"bench: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def run_setup(argv):
    """Run an untimed setup command; its failure aborts the benchmark with its output."""
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"setup `{' '.join(argv)}` exited {out.returncode}\n{out.stderr[-4000:]}")


class Bench:
    def __init__(self, name, argv, stdin_path=None, note="", setup=None, ok=(0,), env=None,
                 warmup=True, rss_from_runs=False, verify=None):
        self.name, self.argv, self.stdin_path, self.note = name, argv, stdin_path, note
        # Run before every run of argv, outside the timed region.
        self.setup = setup
        # The exit statuses that count as success (`diff -ru` of differing directories: 1).
        self.ok = ok
        # Variables added to the environment of argv (not of setup).
        self.env = {**os.environ, **env} if env else None
        # False: no warm-up run (the peer's commands, already run by bench/run's sanity checks).
        self.warmup = warmup
        # True: peak RSS is the largest wait4(2) ru_maxrss of the timed runs instead of one more
        # run under /usr/bin/time (for a command that takes seconds and allocates far more than
        # this script's own RSS, which is the floor of that figure).
        self.rss_from_runs = rss_from_runs
        # verify(stdout_text) checks every run's outcome, returning an error message or None;
        # with it, stdout goes to a temporary file instead of /dev/null.
        self.verify = verify
        self.times, self.cpu, self.maxrss = [], [], []

    def run_once(self):
        if self.setup:
            run_setup(self.setup)
        stdin = open(self.stdin_path, "rb") if self.stdin_path else subprocess.DEVNULL
        stdout = tempfile.TemporaryFile() if self.verify else subprocess.DEVNULL
        try:
            start = time.perf_counter()
            proc = subprocess.Popen(
                self.argv, stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL, env=self.env,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            if self.verify and proc.returncode in self.ok:
                stdout.seek(0)
                text = stdout.read().decode(errors="replace")
                problem = self.verify(text)
                if problem:
                    fail(f"{self.name}: `{' '.join(self.argv)}`: {problem}\n{text[-3000:]}")
        finally:
            if self.stdin_path:
                stdin.close()
            if self.verify:
                stdout.close()
        if proc.returncode not in self.ok:
            # Run it again with its output visible, so that the failure explains itself.
            if self.setup:
                run_setup(self.setup)
            stdin = open(self.stdin_path, "rb") if self.stdin_path else subprocess.DEVNULL
            out = subprocess.run(self.argv, stdin=stdin, capture_output=True, text=True,
                                 env=self.env)
            fail(
                f"{self.name}: `{' '.join(self.argv)}` exited {proc.returncode}\n"
                f"{out.stderr[-4000:]}{out.stdout[-2000:]}"
            )
        # User + system CPU time is less sensitive than wall time to other load on the machine.
        return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss

    def record(self):
        elapsed, cpu, maxrss = self.run_once()
        self.times.append(elapsed)
        self.cpu.append(cpu)
        self.maxrss.append(maxrss)

    def summary(self):
        doc = {
            "command": " ".join(self.argv) + (f" < {os.path.basename(self.stdin_path)}" if self.stdin_path else ""),
            "note": self.note,
            "runs": len(self.times),
            "median_s": statistics.median(self.times),
            "min_s": min(self.times),
            "max_s": max(self.times),
            "times_s": self.times,
            "cpu_median_s": statistics.median(self.cpu),
            "cpu_s": self.cpu,
        }
        if self.setup:
            doc["setup"] = " ".join(self.setup)
        return doc


def peak_rss_kib(argv, stdin_path=None, setup=None, ok=(0,)):
    """Peak RSS of one run of argv (after setup): /usr/bin/time -f %M when available, else wait4(2).

    (The wait4 figure of a child forked by this script never reads below the script's own RSS,
    about 16 MiB, because Linux carries the high-water mark across exec; /usr/bin/time is small.)
    """
    def stdin():
        if stdin_path:
            return open(stdin_path, "rb")
        return contextlib.nullcontext(subprocess.DEVNULL)

    if setup:
        run_setup(setup)
    if os.access("/usr/bin/time", os.X_OK):
        with stdin() as f:
            out = subprocess.run(
                ["/usr/bin/time", "-f", "%M", *argv],
                stdin=f,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        if out.returncode not in ok:
            fail(f"`{' '.join(argv)}` under /usr/bin/time exited {out.returncode}")
        return int(out.stderr.strip().splitlines()[-1]), "/usr/bin/time -f %M"
    with stdin() as f:
        proc = subprocess.Popen(argv, stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) not in ok:
        fail(f"`{' '.join(argv)}` exited {os.waitstatus_to_exitcode(status)}")
    return usage.ru_maxrss, "wait4(2) ru_maxrss"


def config_files(repo):
    files = []
    for d, suffix in (("environments", ".toml"), ("schemas", ".schema.json")):
        for name in sorted(os.listdir(os.path.join(repo, d))):
            if name.endswith(suffix):
                files.append(f"{d}/{name}")
    return files


def sh(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": int(sh("nproc") or os.cpu_count() or 0),
        "cpu_model": cpu or platform.processor(),
        "mem_total_kib": mem_kib,
        "kernel": platform.release(),
        "date_utc": utc_now(),
        "rustc": sh("rustc", "-V"),
        "git": sh("git", "--version"),
        "python": platform.python_version(),
    }


def fmt_s(s):
    return f"{s * 1000:.1f} ms" if s < 10 else f"{s:.2f} s"


def print_table(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    last = len(widths) - 1
    for k, r in enumerate(rows):
        print(
            "  ".join(
                c.ljust(widths[i]) if i in (0, last) else c.rjust(widths[i])
                for i, c in enumerate(r)
            ).rstrip()
        )
        if k == 0:
            print("  ".join("-" * w for w in widths))


def verdict(ok):
    return "ok    " if ok else "MISSED"


def run_benches(benches, runs):
    """One warm-up run of each (page cache, and a first failure shows early), then `runs`
    rounds of one run of each; then one more run of each for its peak RSS."""
    for b in benches:
        if b.warmup:
            b.run_once()
    for _ in range(runs):
        for b in benches:
            b.record()
    rss_tool = ""
    for b in benches:
        if b.rss_from_runs:
            b.peak_rss, b.rss_tool = max(b.maxrss), "wait4(2) ru_maxrss of the timed runs"
        else:
            b.peak_rss, b.rss_tool = peak_rss_kib(b.argv, b.stdin_path, b.setup, b.ok)
            rss_tool = b.rss_tool
    res = {}
    for b in benches:
        res[b.name] = {**b.summary(), "peak_rss_kib": b.peak_rss}
        if not b.warmup:
            res[b.name]["warmup_runs"] = 0
        if b.rss_from_runs:
            res[b.name]["peak_rss_tool"] = b.rss_tool
    return res, rss_tool


def check_workload(a):
    """`deploy check` against parse-only, `git cat-file --batch` and a long history."""
    files = config_files(a.repo)
    config_bytes = sum(os.path.getsize(os.path.join(a.repo, f)) for f in files)
    env_bytes = sum(
        os.path.getsize(os.path.join(a.repo, f)) for f in files if f.startswith("environments/")
    )

    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as batch:
        batch.write("".join(f"HEAD:{f}\n" for f in files))
    try:
        benches = [
            Bench(
                "deploy check",
                [a.deploy, "-C", a.repo, "check"],
                note=f"{a.base_commits} commits",
            ),
            Bench(
                "parse-only floor",
                [a.parse_only, a.repo],
                note="read + toml::from_str::<Table> of environments/*.toml (working tree)",
            ),
            Bench(
                "git cat-file --batch",
                ["git", "-C", a.repo, "cat-file", "--batch"],
                stdin_path=batch.name,
                note=f"the same {len(files)} blobs at HEAD, to /dev/null",
            ),
            Bench(
                "deploy check (history)",
                [a.deploy, "-C", a.repo_history, "check"],
                note=f"{a.commits} commits, same configuration",
            ),
        ]
        res, rss_tool = run_benches(benches, a.runs)
    finally:
        os.unlink(batch.name)
    rss = res["deploy check"]["peak_rss_kib"]
    # What the program needs whatever the configuration (code, libgit2, threads), measured the
    # same way on 1 environment of 1 resource; what is above it is the configuration's.
    tiny_rss, _ = peak_rss_kib([a.deploy, "-C", a.repo_tiny, "check"]) if a.repo_tiny else (0, "")
    check = res["deploy check"]["median_s"]
    check_cpu = res["deploy check"]["cpu_median_s"]
    ratios = {
        "check_over_parse_only": check / res["parse-only floor"]["median_s"],
        "check_over_cat_file": check / res["git cat-file --batch"]["median_s"],
        "history_over_base": res["deploy check (history)"]["median_s"] / check,
        # The same ratios on CPU time (user + system): a cross-check on a busy machine.
        "cpu_check_over_parse_only": check_cpu / res["parse-only floor"]["cpu_median_s"],
        "cpu_history_over_base": res["deploy check (history)"]["cpu_median_s"] / check_cpu,
        # Peak resident memory over the bytes of configuration read (issue 6: "a few times").
        "check_peak_rss_over_config": rss * 1024 / config_bytes,
        "check_peak_rss_above_floor_over_config": (rss - tiny_rss) * 1024 / config_bytes,
    }
    targets = {
        "check_le_2x_parse_only": ratios["check_over_parse_only"] <= 2.0,
        "check_under_1s": check < 1.0,
        "history_ratio_le_1_2": ratios["history_over_base"] <= 1.2,
    }

    def report():
        print(
            f"check: {a.envs} environments x {a.resources} resources, "
            f"{len(files)} files, {config_bytes:,} bytes of configuration; "
            f"median of {a.runs} runs after 1 warm-up"
        )
        print()
        rows = [("name", "median", "min", "max", "cpu median", "peak RSS", "check / this")]
        for b in benches:
            s = res[b.name]
            if b.name == "deploy check":
                label, ratio = f"deploy check ({a.base_commits} commits)", ""
            elif b.name == "deploy check (history)":
                label = f"deploy check ({a.commits} commits)"
                ratio = f"{s['median_s'] / check:.2f}x = history / base"
            else:
                label, ratio = b.name, f"{check / s['median_s']:.2f}x"
            rows.append(
                (label, fmt_s(s["median_s"]), fmt_s(s["min_s"]), fmt_s(s["max_s"]),
                 fmt_s(s["cpu_median_s"]), f"{s['peak_rss_kib'] / 1024:.1f} MiB", ratio)
            )
        print_table(rows)
        print()
        print(f"peak RSS of deploy check: {rss:,} KiB ({rss / 1024:.1f} MiB; {rss_tool}): "
              f"{ratios['check_peak_rss_over_config']:.1f}x the configuration")
        print(f"  above the program's floor ({tiny_rss:,} KiB: deploy check of 1 environment x 1 "
              f"resource): {ratios['check_peak_rss_above_floor_over_config']:.1f}x the configuration")
        print(f"configuration size:       {config_bytes:,} bytes ({config_bytes / 2**20:.1f} MiB)")
        print()
        print(f"target check <= 2x parse-only: {verdict(targets['check_le_2x_parse_only'])} "
              f"{ratios['check_over_parse_only']:.2f}x "
              f"(on CPU time: {ratios['cpu_check_over_parse_only']:.2f}x)")
        print(f"target check < 1 s:            {verdict(targets['check_under_1s'])} {fmt_s(check)}")
        print(f"target history ratio <= 1.2:   {verdict(targets['history_ratio_le_1_2'])} "
              f"{ratios['history_over_base']:.2f} "
              f"(on CPU time: {ratios['cpu_history_over_base']:.2f})")

    return {
        "parameters": {
            "environments": a.envs,
            "resources_per_environment": a.resources,
            "keys_per_resource": 5,
            "base_commits": a.base_commits,
            "history_commits": a.commits,
        },
        "config": {
            "files": len(files),
            "bytes": config_bytes,
            "environment_bytes": env_bytes,
        },
        "results": res,
        "peak_rss_kib": {"deploy check": rss, "deploy check (1 x 1)": tiny_rss, "tool": rss_tool},
        "ratios": ratios,
        "targets": targets,
        "report": report,
    }


def dir_size(path):
    """Files and bytes of the regular files directly in `path`."""
    names = [n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n))]
    return len(names), sum(os.path.getsize(os.path.join(path, n)) for n in names)


def plan_workload(a):
    """`deploy plan` of a 1 % change against `diff -ru` of the live generation and the desired
    files: both read the same two states and print the differences."""
    live = os.path.realpath(os.path.join(a.plan_target, "current"))
    live_files, live_bytes = dir_size(live)
    desired_files, desired_bytes = dir_size(a.plan_desired)
    files = config_files(a.plan_repo)
    config_bytes = sum(os.path.getsize(os.path.join(a.plan_repo, f)) for f in files)
    plan = Bench(
        "deploy plan",
        [a.deploy, "-C", a.plan_repo, "plan", "--target", "bench"],
        note=f"{a.plan_changed} of {a.plan_resources} resources changed; the text plan with a "
             "unified diff of each, to /dev/null; nothing is written, so no setup",
    )
    diff = Bench(
        "diff -ru",
        ["diff", "-ru", live, a.plan_desired],
        ok=(1,),  # the directories differ; 0 would mean the workload is broken
        note=f"the live generation ({live_files} files) against the files a deployment of the "
             f"new commit writes ({desired_files} files, {desired_bytes:,} bytes), to /dev/null",
    )
    benches = [plan, diff]
    res, rss_tool = run_benches(benches, a.runs)
    p, d = res[plan.name], res[diff.name]
    rss = p["peak_rss_kib"]
    tiny_rss = 0
    if a.plan_tiny:
        tiny_rss, _ = peak_rss_kib([a.deploy, "-C", a.plan_tiny, "plan", "--target", "bench"])
    ratios = {
        "plan_over_diff": p["median_s"] / d["median_s"],
        "cpu_plan_over_diff": p["cpu_median_s"] / d["cpu_median_s"],
        "plan_peak_rss_over_config": rss * 1024 / config_bytes,
        "plan_peak_rss_over_config_and_live": rss * 1024 / (config_bytes + live_bytes),
        "plan_peak_rss_above_floor_over_config": (rss - tiny_rss) * 1024 / config_bytes,
        "plan_peak_rss_above_floor_over_config_and_live":
            (rss - tiny_rss) * 1024 / (config_bytes + live_bytes),
    }
    targets = {"plan_le_2x_diff": ratios["plan_over_diff"] <= 2.0}

    def report():
        print(
            f"plan: 1 environment x {a.plan_resources} resources, {a.plan_changed} changed; "
            f"configuration {config_bytes:,} bytes in {len(files)} files, live generation "
            f"{live_files} files, {live_bytes:,} bytes; median of {a.runs} runs after 1 warm-up"
        )
        print()
        rows = [("name", "median", "min", "max", "cpu median", "peak RSS", "plan / this")]
        for b in benches:
            s = res[b.name]
            rows.append(
                (b.name, fmt_s(s["median_s"]), fmt_s(s["min_s"]), fmt_s(s["max_s"]),
                 fmt_s(s["cpu_median_s"]), f"{s['peak_rss_kib'] / 1024:.1f} MiB",
                 f"{p['median_s'] / s['median_s']:.2f}x" if b is diff else "")
            )
        print_table(rows)
        print()
        print(f"peak RSS of deploy plan: {rss:,} KiB ({rss / 1024:.1f} MiB; {rss_tool}): "
              f"{ratios['plan_peak_rss_over_config']:.1f}x the configuration, "
              f"{ratios['plan_peak_rss_over_config_and_live']:.1f}x configuration + live files")
        print(f"  above the program's floor ({tiny_rss:,} KiB: deploy plan of 1 resource): "
              f"{ratios['plan_peak_rss_above_floor_over_config']:.1f}x the configuration, "
              f"{ratios['plan_peak_rss_above_floor_over_config_and_live']:.1f}x configuration + "
              "live files")
        print()
        print(f"target plan <= 2x diff -ru:    {verdict(targets['plan_le_2x_diff'])} "
              f"{ratios['plan_over_diff']:.2f}x "
              f"(on CPU time: {ratios['cpu_plan_over_diff']:.2f}x)")

    return {
        "parameters": {
            "plan_resources": a.plan_resources,
            "plan_changed_resources": a.plan_changed,
        },
        "config": {
            "plan_config_files": len(files),
            "plan_config_bytes": config_bytes,
            "plan_live_files": live_files,
            "plan_live_bytes": live_bytes,
            "plan_desired_files": desired_files,
            "plan_desired_bytes": desired_bytes,
        },
        "results": res,
        "peak_rss_kib": {"deploy plan": rss, "deploy plan (1 resource)": tiny_rss, "tool": rss_tool},
        "ratios": ratios,
        "targets": targets,
        "report": report,
    }


def generation_count(target):
    gens = os.path.join(target, "generations")
    return sum(1 for n in os.listdir(gens) if n.isdigit())


def create_probe(parent, files=2000):
    """Microseconds per create(2) of `files` empty files in a new directory under `parent`
    (kept until the end: deleting them would itself slow the next creates down, see `settle`)."""
    d = tempfile.mkdtemp(prefix=".probe-", dir=parent)
    start = time.perf_counter()
    for i in range(files):
        os.close(os.open(os.path.join(d, f"p{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return (time.perf_counter() - start) / files * 1e6


def settle(parents, max_wait, threshold_us=20.0, pause=20):
    """Wait until creating files runs at its normal speed, for at most max_wait seconds.

    On ext4 without a journal, an inode freed less than 60 s ago (360 s while its inode-table
    block is dirty) is skipped by the inode allocator, one buffer lookup each, so every create
    after a mass deletion (a previous benchmark's cleanup, a `cargo clean`) costs O(inodes
    recently freed): 10 us per create becomes 200 us and more. That would measure the
    filesystem's recent history, not envlock, so the apply workload starts once it has passed.
    The probes are made next to the floor's generations (the same block groups as the timed
    writes, as far as the allocator's placement goes); the slowest one counts."""
    def probe():
        return max(create_probe(p) for p in parents)

    first = per_create = probe()
    waited = 0
    while per_create > threshold_us and waited < max_wait:
        if waited == 0:
            print(f"bench: creating a file takes {per_create:.0f} us (normal: under "
                  f"{threshold_us:.0f} us): recently freed inodes on this filesystem; waiting up "
                  f"to {max_wait} s for it to settle", file=sys.stderr)
        time.sleep(pause)
        waited += pause
        per_create = probe()
    if per_create > threshold_us:
        print(f"bench: WARNING: creating a file still takes {per_create:.0f} us after "
              f"{waited} s; the apply figures include that", file=sys.stderr)
    elif waited:
        print(f"bench: settled after {waited} s ({per_create:.0f} us per create)", file=sys.stderr)
    return {
        "probe_us_per_create_first": round(first, 1),
        "probe_us_per_create": round(per_create, 1),
        "waited_s": waited,
        "threshold_us": threshold_us,
    }


def apply_workload(a):
    """`deploy --target bench --yes` of a 1 % change against cp -r + sync + mv -T, in two
    regimes measured one after the other: keep = 1000 (nothing deleted while measuring) first,
    then keep = 10 (the deploy prunes one generation per run, the floor rm -rf's one)."""
    here = os.path.dirname(os.path.abspath(__file__))
    names = os.listdir(a.apply_desired)
    desired_files = len(names)
    desired_bytes = sum(os.path.getsize(os.path.join(a.apply_desired, n)) for n in names)
    regimes = []
    for spec in a.apply_regime:
        keep, repo, target, floor_root = spec.split(":", 3)
        regimes.append((int(keep), repo, target, floor_root))
    regimes.sort(reverse=True)  # keep = 1000 first: measured before anything is deleted
    os.makedirs(a.apply_probe_dir, exist_ok=True)
    settled = settle(
        [a.apply_probe_dir] + [os.path.join(r[3], "generations") for r in regimes],
        a.apply_settle_max,
    )

    res, rss_tool, rows = {}, "", []
    for keep, repo, target, floor_root in regimes:
        suffix = "" if keep >= 1000 else f" (keep {keep})"
        gens_before = generation_count(target)
        prunes = keep < 1000
        deploy = Bench(
            "deploy apply" + suffix,
            [a.deploy, "-C", repo, "--target", "bench", "--yes"],
            setup=[os.path.join(here, "apply-setup"), "deploy", a.deploy, repo],
            note=f"{a.apply_changed} of {a.apply_resources} resources changed: a new generation "
                 f"of {desired_files} files; keep = {keep}"
                 + (": prunes 1 generation per run" if prunes else ": nothing pruned"),
        )
        floor = Bench(
            "apply floor" + suffix,
            [os.path.join(here, "apply-floor"), a.apply_desired, floor_root]
            + ([str(keep)] if prunes else []),
            setup=[os.path.join(here, "apply-setup"), "floor", floor_root],
            note=f"cp -r of the same {desired_files} files ({desired_bytes:,} bytes), sync, "
                 "ln -s + mv -T" + (f", rm -rf of the generations beyond {keep}" if prunes else ""),
        )
        part, rss_tool = run_benches([deploy, floor], a.runs)
        res.update(part)
        rows.append((keep, deploy.name, floor.name))
        gens_after = generation_count(target)
        if prunes and gens_after != keep:
            fail(f"apply: the keep = {keep} deploy target has {gens_after} generations after "
                 f"measuring (had {gens_before} before); expected {keep}")

    def ratio(num, den, field="median_s"):
        return res[num][field] / res[den][field]

    ratios, targets = {}, {}
    for keep, d, f in rows:
        key = "apply_over_floor" if keep >= 1000 else f"apply_keep{keep}_over_floor_keep{keep}"
        ratios[key] = ratio(d, f)
        ratios["cpu_" + key] = ratio(d, f, "cpu_median_s")
    if "apply_over_floor" in ratios:
        targets["apply_le_1_5x_floor"] = ratios["apply_over_floor"] <= 1.5

    def report():
        print(
            f"apply: 1 environment x {a.apply_resources} resources, {a.apply_changed} changed; "
            f"{desired_files} files, {desired_bytes:,} bytes written per generation; "
            f"median of {a.runs} runs after 1 warm-up"
        )
        print(
            f"filesystem before measuring: {settled['probe_us_per_create']:.0f} us per create "
            f"(waited {settled['waited_s']} s; {settled['probe_us_per_create_first']:.0f} us at first)"
        )
        print()
        table = [("name", "median", "min", "max", "cpu median", "peak RSS", "deploy / floor")]
        for keep, d, f in rows:
            for name in (d, f):
                s = res[name]
                table.append(
                    (name, fmt_s(s["median_s"]), fmt_s(s["min_s"]), fmt_s(s["max_s"]),
                     fmt_s(s["cpu_median_s"]), f"{s['peak_rss_kib'] / 1024:.1f} MiB",
                     f"{ratio(d, f):.2f}x" if name == f else "")
                )
        print_table(table)
        print()
        if "apply_over_floor" in ratios:
            print(f"target apply <= 1.5x floor:    {verdict(targets['apply_le_1_5x_floor'])} "
                  f"{ratios['apply_over_floor']:.2f}x "
                  f"(on CPU time: {ratios['cpu_apply_over_floor']:.2f}x)")
        for keep, d, f in rows:
            if keep < 1000:
                key = f"apply_keep{keep}_over_floor_keep{keep}"
                print(f"with keep = {keep} (pruning):  {ratios[key]:.2f}x "
                      f"(on CPU time: {ratios['cpu_' + key]:.2f}x)")

    return {
        "parameters": {
            "apply_resources": a.apply_resources,
            "apply_changed_resources": a.apply_changed,
            "apply_keys_per_resource": 6,
            "apply_keep": [keep for keep, *_ in regimes],
        },
        "config": {
            "apply_files_per_generation": desired_files,
            "apply_bytes_per_generation": desired_bytes,
            "apply_settle": settled,
        },
        "results": res,
        "peak_rss_kib": {**{d: res[d]["peak_rss_kib"] for _, d, _ in rows}, "tool": rss_tool},
        "ratios": ratios,
        "targets": targets,
        "report": report,
    }


def log_workload(a):
    """`deploy log verify` of a long deployment log against `sha256sum` of the same file, both
    reading it from the page cache (the warm-up run puts it there). (`deploy log`, the
    newest-first table of every record, is no longer timed: 12 s a run, for information only,
    it cost 1.5 minutes of the 15 that the whole benchmark may take; bench/run still runs it
    once to check that it shows every record.)"""
    size = os.path.getsize(a.log_file)
    verify = Bench(
        "deploy log verify",
        [a.deploy, "-C", a.log_repo, "log", "verify", "--target", "bench"],
        note=f"{a.log_records} records, {size:,} bytes: the whole hash chain",
    )
    floor = Bench(
        "sha256sum",
        ["sha256sum", a.log_file],
        note="one SHA-256 of the same file (coreutils), to /dev/null",
    )
    benches = [verify, floor]
    res, rss_tool = run_benches(benches, a.runs)
    for b in benches:
        res[b.name]["mb_per_s"] = size / 1e6 / res[b.name]["median_s"]
    v, f = res[verify.name], res[floor.name]
    ratios = {
        # Throughput of verify relative to sha256sum's: sha256sum time / verify time.
        "log_verify_throughput_over_sha256sum": f["median_s"] / v["median_s"],
        "cpu_log_verify_throughput_over_sha256sum": f["cpu_median_s"] / v["cpu_median_s"],
    }
    targets = {
        "log_verify_ge_0_5x_sha256sum": ratios["log_verify_throughput_over_sha256sum"] >= 0.5,
    }
    sha_version = sh("sha256sum", "--version").splitlines()

    def report():
        print(
            f"log: {a.log_records:,} records, {size:,} bytes ({size / 2**20:.1f} MiB, "
            f"{size / a.log_records:.0f} bytes per record), in the page cache; "
            f"median of {a.runs} runs after 1 warm-up"
        )
        print()
        rows = [("name", "median", "min", "max", "cpu median", "peak RSS", "MB/s",
                 "sha256sum / this")]
        for b in benches:
            s = res[b.name]
            rows.append(
                (b.name, fmt_s(s["median_s"]), fmt_s(s["min_s"]), fmt_s(s["max_s"]),
                 fmt_s(s["cpu_median_s"]), f"{s['peak_rss_kib'] / 1024:.1f} MiB",
                 f"{s['mb_per_s']:.0f}", f"{f['median_s'] / s['median_s']:.2f}x")
            )
        print_table(rows)
        print()
        print(f"target verify >= 0.5x sha256sum throughput: "
              f"{verdict(targets['log_verify_ge_0_5x_sha256sum'])} "
              f"{ratios['log_verify_throughput_over_sha256sum']:.2f}x "
              f"(on CPU time: {ratios['cpu_log_verify_throughput_over_sha256sum']:.2f}x)")

    return {
        "parameters": {"log_records": a.log_records},
        "config": {
            "log_bytes": size,
            "log_bytes_per_record": round(size / a.log_records, 1),
            "sha256sum": sha_version[0] if sha_version else "",
        },
        "results": res,
        "peak_rss_kib": {
            verify.name: res[verify.name]["peak_rss_kib"], "tool": rss_tool
        },
        "ratios": ratios,
        "targets": targets,
        "report": report,
    }


def peer_workload(a):
    """Ansible (`ansible-playbook`, ansible.builtin.copy of the files into a directory, local
    connection) against `deploy` on an environment of the same resources: `--check --diff`
    against `deploy plan`, the real copy against `deploy --target bench --yes`. Every timed run
    changes every file: its untimed setup puts the old files back (deploy: the `base` commit
    deployed, `changed` checked out; Ansible: the destination directory refilled with the old
    files)."""
    here = os.path.dirname(os.path.abspath(__file__))
    files, nbytes = dir_size(a.peer_changed)
    playbook = os.path.join(a.peer_venv, "bin", "ansible-playbook")
    python = os.path.join(a.peer_venv, "bin", "python")
    version = sh(playbook, "--version").splitlines()
    ansible = [
        playbook, "-i", "localhost,", "-e", f"ansible_python_interpreter={python}",
        "-e", f"src_dir={a.peer_changed}", "-e", f"dest_dir={a.peer_dest}",
        "-e", f"@{a.peer_vars}",
    ]
    env = {"ANSIBLE_CONFIG": a.peer_config}
    deploy_setup = [os.path.join(here, "apply-setup"), "deploy", a.deploy, a.peer_repo]
    ansible_setup = [os.path.join(here, "apply-setup"), "files", a.peer_base, a.peer_dest]

    def same_files(x, y):
        names = sorted(os.listdir(x))
        if names != sorted(os.listdir(y)):
            return False
        return filecmp.cmpfiles(x, y, names, shallow=False)[0] == names

    def verified(check_mode):
        """Every run of ansible-playbook is checked: each file reported changed (and, with
        --check --diff, shown as a diff), and the destination as expected afterwards."""
        def verify(out):
            changed = out.count("\nchanged: [localhost] => (item=")
            if changed != files:
                return f"{changed} files reported changed, expected {files}"
            if check_mode:
                diffs = out.count("\n--- before: ")
                if diffs != files:
                    return f"{diffs} diffs shown, expected {files}"
                if not same_files(a.peer_base, a.peer_dest):
                    return "--check changed the destination"
            elif not same_files(a.peer_changed, a.peer_dest):
                return "the destination does not hold the files deploy writes"
            return None
        return verify

    plan = Bench(
        "deploy plan (peer)",
        [a.deploy, "-C", a.peer_repo, "plan", "--target", "bench"],
        setup=deploy_setup,
        note=f"{files} resources, all changed: the text plan with their diffs, to /dev/null",
    )
    check = Bench(
        "ansible --check --diff",
        ansible[:1] + ["--check", "--diff"] + ansible[1:] + [a.peer_playbook],
        setup=ansible_setup, env=env, warmup=False, rss_from_runs=True, verify=verified(True),
        note=f"ansible.builtin.copy of {files} files, check mode with diffs (output checked)",
    )
    apply = Bench(
        "deploy apply (peer)",
        [a.deploy, "-C", a.peer_repo, "--target", "bench", "--yes"],
        setup=deploy_setup,
        note=f"a new generation of {files} resources (all changed) and its metadata",
    )
    copy = Bench(
        "ansible copy",
        ansible + [a.peer_playbook],
        setup=ansible_setup, env=env, warmup=False, rss_from_runs=True, verify=verified(False),
        note=f"ansible.builtin.copy of {files} files ({nbytes:,} bytes), all changed "
             "(output and result checked)",
    )
    benches = [plan, check, apply, copy]
    res, rss_tool = run_benches(benches, a.peer_runs)
    ratios = {
        "ansible_check_over_deploy_plan": res[check.name]["median_s"] / res[plan.name]["median_s"],
        "ansible_copy_over_deploy_apply": res[copy.name]["median_s"] / res[apply.name]["median_s"],
        "cpu_ansible_check_over_deploy_plan":
            res[check.name]["cpu_median_s"] / res[plan.name]["cpu_median_s"],
        "cpu_ansible_copy_over_deploy_apply":
            res[copy.name]["cpu_median_s"] / res[apply.name]["cpu_median_s"],
    }
    targets = {
        "plan_ge_50x_faster_than_ansible_check": ratios["ansible_check_over_deploy_plan"] >= 50,
        "apply_ge_50x_faster_than_ansible_copy": ratios["ansible_copy_over_deploy_apply"] >= 50,
    }

    def report():
        print(
            f"peer: {files} files ({nbytes:,} bytes), every one changed in every timed run; "
            f"{version[0] if version else 'ansible-playbook'}; median of {a.peer_runs} runs "
            "(deploy after 1 warm-up; Ansible without: every run is checked instead)"
        )
        print()
        rows = [("name", "median", "min", "max", "cpu median", "peak RSS", "this / deploy")]
        for b, base in ((plan, None), (check, plan), (apply, None), (copy, apply)):
            s = res[b.name]
            rows.append(
                (b.name, fmt_s(s["median_s"]), fmt_s(s["min_s"]), fmt_s(s["max_s"]),
                 fmt_s(s["cpu_median_s"]), f"{s['peak_rss_kib'] / 1024:.1f} MiB",
                 f"{s['median_s'] / res[base.name]['median_s']:.0f}x" if base else "")
            )
        print_table(rows)
        print()
        print(f"target plan >= 50x faster than ansible --check --diff: "
              f"{verdict(targets['plan_ge_50x_faster_than_ansible_check'])} "
              f"{ratios['ansible_check_over_deploy_plan']:.0f}x "
              f"(on CPU time: {ratios['cpu_ansible_check_over_deploy_plan']:.0f}x)")
        print(f"target apply >= 50x faster than the Ansible copy:     "
              f"{verdict(targets['apply_ge_50x_faster_than_ansible_copy'])} "
              f"{ratios['ansible_copy_over_deploy_apply']:.0f}x "
              f"(on CPU time: {ratios['cpu_ansible_copy_over_deploy_apply']:.0f}x)")

    return {
        "parameters": {"peer_files": files, "peer_runs": a.peer_runs},
        "config": {
            "peer_bytes": nbytes,
            "ansible": version[0] if version else "",
            "ansible_python": sh(python, "--version"),
        },
        "results": res,
        "peak_rss_kib": {
            **{b.name: res[b.name]["peak_rss_kib"] for b in benches},
            "tool": f"{rss_tool} (Ansible: wait4(2) ru_maxrss of the timed runs)",
        },
        "ratios": ratios,
        "targets": targets,
        "report": report,
    }


WORKLOADS = {
    "check": (check_workload, ("parse_only", "repo", "repo_history", "envs", "resources",
                               "commits", "base_commits")),
    "plan": (plan_workload, ("plan_repo", "plan_target", "plan_desired", "plan_resources",
                             "plan_changed")),
    "apply": (apply_workload, ("apply_regime", "apply_desired", "apply_resources",
                               "apply_changed", "apply_probe_dir")),
    "log": (log_workload, ("log_repo", "log_file", "log_records")),
    "peer": (peer_workload, ("peer_repo", "peer_target", "peer_base", "peer_changed",
                             "peer_dest", "peer_playbook", "peer_vars", "peer_venv",
                             "peer_config", "peer_runs")),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default="check", help="comma-separated: " + ", ".join(WORKLOADS))
    for opt in ("--deploy", "--out"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--source", default="")
    ap.add_argument("--runs", type=int, required=True)
    for opt in ("--parse-only", "--repo", "--repo-history", "--repo-tiny", "--plan-tiny",
                "--apply-desired",
                "--apply-probe-dir", "--log-repo", "--log-file", "--plan-repo", "--plan-target",
                "--plan-desired", "--peer-repo", "--peer-target", "--peer-base",
                "--peer-changed", "--peer-dest", "--peer-playbook", "--peer-vars",
                "--peer-venv", "--peer-config"):
        ap.add_argument(opt, default="")
    ap.add_argument("--apply-settle-max", type=int, default=480)
    ap.add_argument("--apply-regime", action="append", default=[],
                    metavar="KEEP:REPO:TARGET:FLOOR_ROOT")
    for opt in ("--envs", "--resources", "--commits", "--base-commits", "--apply-resources",
                "--apply-changed", "--log-records", "--plan-resources", "--plan-changed",
                "--peer-runs"):
        ap.add_argument(opt, type=int, default=0)
    a = ap.parse_args()
    workloads = [w for w in a.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r} (known: {', '.join(WORKLOADS)})")
        missing = [o for o in WORKLOADS[w][1] if not getattr(a, o)]
        if missing:
            ap.error(f"workload {w} needs " + ", ".join("--" + o.replace("_", "-") for o in missing))
    if not workloads:
        ap.error("no workload selected")

    keys = ("parameters", "config", "results", "peak_rss_kib", "ratios", "targets")
    parts, measured = [], {}
    for w in workloads:
        before = os.getloadavg()
        parts.append(WORKLOADS[w][0](a))
        after = os.getloadavg()
        measured[w] = {
            "date_utc": utc_now(),
            "source": a.source,
            "runs": a.runs,
            "loadavg_before": [round(x, 2) for x in before],
            "loadavg_after": [round(x, 2) for x in after],
        }

    mach = machine()
    mach["loadavg_before"] = measured[workloads[0]]["loadavg_before"]
    mach["loadavg_after"] = measured[workloads[-1]]["loadavg_after"]
    doc = {
        "machine": mach,
        "source": a.source,
        "workloads": workloads,
        "measured": measured,
        "parameters": {"runs": a.runs, "warmup_runs": 1},
        **{k: {} for k in keys[1:]},
    }
    # A run of some workloads keeps the other workloads' latest figures from the same file.
    carried = []
    try:
        with open(a.out) as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = {}
    for w in old.get("workloads", ["check"] if old else []):
        if w in WORKLOADS and w not in workloads:
            carried.append(w)
    if carried:
        for k in keys:
            doc[k].update(old.get(k, {}))
        doc["parameters"].update(runs=a.runs, warmup_runs=1)
        for w in carried:
            doc["measured"][w] = old.get("measured", {}).get(w) or {
                "date_utc": old.get("machine", {}).get("date_utc", ""),
                "source": old.get("source", ""),
                "runs": old.get("parameters", {}).get("runs"),
                "loadavg_before": old.get("machine", {}).get("loadavg_before"),
                "loadavg_after": old.get("machine", {}).get("loadavg_after"),
            }
        doc["workloads"] = [w for w in WORKLOADS if w in workloads or w in carried]
    for part in parts:
        for k in keys:
            doc[k].update(part[k])
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    m = doc["machine"]
    print()
    print(f"envlock bench ({', '.join(workloads)}): median of {a.runs} runs after 1 warm-up")
    print(
        f"machine: {m['cpu_model']}, nproc {m['nproc']}, Linux {m['kernel']}, {m['date_utc']}, "
        f"load average {m['loadavg_before'][0]} before / {m['loadavg_after'][0]} after"
    )
    for part in parts:
        print()
        part["report"]()
    if carried:
        print(f"\nkept the latest {', '.join(carried)} figures already in {a.out} "
              f"({', '.join(doc['measured'][w]['date_utc'] for w in carried)})")
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
