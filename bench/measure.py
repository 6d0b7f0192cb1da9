#!/usr/bin/env python3
"""Timing and reporting half of `bench/run` (which builds, generates and sanity-checks first).

usage: measure.py --deploy BIN --parse-only BIN --repo DIR --repo-history DIR
                  --runs N --envs N --resources N --commits N --base-commits N --out FILE

Every command is run once as a warm-up, then N times; the runs are interleaved round-robin
(one run of each command per round) so that a drift of the machine's speed affects every
command alike. Wall time is measured with time.perf_counter around spawn + wait, the peak RSS
of every run comes from wait4(2). Any run that exits non-zero aborts the benchmark.
"""

import argparse
import contextlib
import datetime
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


class Bench:
    def __init__(self, name, argv, stdin_path=None, note=""):
        self.name, self.argv, self.stdin_path, self.note = name, argv, stdin_path, note
        self.times, self.cpu = [], []

    def run_once(self):
        stdin = open(self.stdin_path, "rb") if self.stdin_path else subprocess.DEVNULL
        try:
            start = time.perf_counter()
            proc = subprocess.Popen(
                self.argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if self.stdin_path:
                stdin.close()
        if proc.returncode != 0:
            # Run it again with its output visible, so that the failure explains itself.
            stdin = open(self.stdin_path, "rb") if self.stdin_path else subprocess.DEVNULL
            out = subprocess.run(self.argv, stdin=stdin, capture_output=True, text=True)
            fail(
                f"{self.name}: `{' '.join(self.argv)}` exited {proc.returncode}\n"
                f"{out.stderr[-4000:]}"
            )
        # User + system CPU time is less sensitive than wall time to other load on the machine.
        return elapsed, usage.ru_utime + usage.ru_stime

    def record(self):
        elapsed, cpu = self.run_once()
        self.times.append(elapsed)
        self.cpu.append(cpu)

    def summary(self):
        return {
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


def peak_rss_kib(argv, stdin_path=None):
    """Peak RSS of one run of argv: /usr/bin/time -f %M when available, else wait4(2).

    (The wait4 figure of a child forked by this script never reads below the script's own RSS,
    about 16 MiB, because Linux carries the high-water mark across exec; /usr/bin/time is small.)
    """
    def stdin():
        if stdin_path:
            return open(stdin_path, "rb")
        return contextlib.nullcontext(subprocess.DEVNULL)

    if os.access("/usr/bin/time", os.X_OK):
        with stdin() as f:
            out = subprocess.run(
                ["/usr/bin/time", "-f", "%M", *argv],
                stdin=f,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        if out.returncode != 0:
            fail(f"`{' '.join(argv)}` under /usr/bin/time exited {out.returncode}")
        return int(out.stderr.strip().splitlines()[-1]), "/usr/bin/time -f %M"
    with stdin() as f:
        proc = subprocess.Popen(argv, stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
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
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rustc": sh("rustc", "-V"),
        "git": sh("git", "--version"),
        "python": platform.python_version(),
    }


def fmt_s(s):
    return f"{s * 1000:.1f} ms" if s < 10 else f"{s:.2f} s"


def main():
    ap = argparse.ArgumentParser()
    for opt in ("--deploy", "--parse-only", "--repo", "--repo-history", "--out", "--source"):
        ap.add_argument(opt, required=opt != "--source", default="")
    for opt in ("--runs", "--envs", "--resources", "--commits", "--base-commits"):
        ap.add_argument(opt, type=int, required=True)
    a = ap.parse_args()

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
        load_before = os.getloadavg()
        for b in benches:  # warm-up: page cache, and a first failure shows early
            b.run_once()
        for _ in range(a.runs):
            for b in benches:
                b.record()
        load_after = os.getloadavg()
        rss_tool = ""
        for b in benches:
            b.peak_rss, rss_tool = peak_rss_kib(b.argv, b.stdin_path)
    finally:
        os.unlink(batch.name)
    rss = benches[0].peak_rss
    res = {b.name: {**b.summary(), "peak_rss_kib": b.peak_rss} for b in benches}
    check = res["deploy check"]["median_s"]
    check_cpu = res["deploy check"]["cpu_median_s"]
    ratios = {
        "check_over_parse_only": check / res["parse-only floor"]["median_s"],
        "check_over_cat_file": check / res["git cat-file --batch"]["median_s"],
        "history_over_base": res["deploy check (history)"]["median_s"] / check,
        # The same ratios on CPU time (user + system): a cross-check on a busy machine.
        "cpu_check_over_parse_only": check_cpu / res["parse-only floor"]["cpu_median_s"],
        "cpu_history_over_base": res["deploy check (history)"]["cpu_median_s"] / check_cpu,
    }
    targets = {
        "check_le_2x_parse_only": ratios["check_over_parse_only"] <= 2.0,
        "check_under_1s": check < 1.0,
        "history_ratio_le_1_2": ratios["history_over_base"] <= 1.2,
    }
    mach = machine()
    mach["loadavg_before"] = [round(x, 2) for x in load_before]
    mach["loadavg_after"] = [round(x, 2) for x in load_after]
    doc = {
        "machine": mach,
        "source": a.source,
        "parameters": {
            "environments": a.envs,
            "resources_per_environment": a.resources,
            "keys_per_resource": 5,
            "runs": a.runs,
            "warmup_runs": 1,
            "base_commits": a.base_commits,
            "history_commits": a.commits,
        },
        "config": {
            "files": len(files),
            "bytes": config_bytes,
            "environment_bytes": env_bytes,
        },
        "results": res,
        "peak_rss_kib": {"deploy check": rss, "tool": rss_tool},
        "ratios": ratios,
        "targets": targets,
    }
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    m = doc["machine"]
    print()
    print(
        f"envlock bench: {a.envs} environments x {a.resources} resources, "
        f"{len(files)} files, {config_bytes:,} bytes of configuration; "
        f"median of {a.runs} runs after 1 warm-up"
    )
    print(
        f"machine: {m['cpu_model']}, nproc {m['nproc']}, Linux {m['kernel']}, {m['date_utc']}, "
        f"load average {m['loadavg_before'][0]} before / {m['loadavg_after'][0]} after"
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
    print()
    print(f"peak RSS of deploy check: {rss:,} KiB ({rss / 1024:.1f} MiB; {rss_tool})")
    print(f"configuration size:       {config_bytes:,} bytes ({config_bytes / 2**20:.1f} MiB)")
    print()

    def verdict(ok):
        return "ok    " if ok else "MISSED"

    print(f"target check <= 2x parse-only: {verdict(targets['check_le_2x_parse_only'])} "
          f"{ratios['check_over_parse_only']:.2f}x "
          f"(on CPU time: {ratios['cpu_check_over_parse_only']:.2f}x)")
    print(f"target check < 1 s:            {verdict(targets['check_under_1s'])} {fmt_s(check)}")
    print(f"target history ratio <= 1.2:   {verdict(targets['history_ratio_le_1_2'])} "
          f"{ratios['history_over_base']:.2f} "
          f"(on CPU time: {ratios['cpu_history_over_base']:.2f})")
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
