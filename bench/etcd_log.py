#!/usr/bin/env python3
"""Cost of the log check before an etcd deployment (docs/benchmarks.md, "The etcd log's
checkpoint"): a large log (bench/gen_log.py) loaded as `log/<seq>` keys into a fresh etcd
member; a no-change `deploy --target bench --yes` timed with the log's checkpoint valid (the
normal case) and with it deleted before the run (the whole log read and verified, as every
deployment did before the checkpoint).

usage: bench/etcd_log.py DEPLOY_BINARY REPO_ROOT [RECORDS, default 100000] [RUNS, default 5]
       (cargo build --release first; needs etcd, etcdctl, git, python3)
"""
import base64, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

DEPLOY, ROOT = sys.argv[1], sys.argv[2]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 100000
RUNS = int(sys.argv[4]) if len(sys.argv) > 4 else 5
ACCOUNT = "543210987654"
STATE = "/bench/svc.envlock/"

def port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def sh(*a, cwd=None):
    r = subprocess.run(a, cwd=cwd, capture_output=True)
    if r.returncode: sys.exit(f"{a} -> {r.returncode}\n{r.stderr.decode()[-3000:]}")
    return r.stdout.decode()

tmp = tempfile.mkdtemp(prefix="seal-etcd-log-")
c, p = port(), port()
ep = f"http://127.0.0.1:{c}"
etcd = subprocess.Popen(["etcd", "--name", "b", "--data-dir", f"{tmp}/data", "--listen-client-urls", ep,
    "--advertise-client-urls", ep, "--listen-peer-urls", f"http://127.0.0.1:{p}",
    "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}", "--initial-cluster", f"b=http://127.0.0.1:{p}",
    "--max-txn-ops", "2000", "--quota-backend-bytes", str(8 << 30), "--log-level", "warn"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ctl = ["etcdctl", f"--endpoints={ep}"]
try:
    t0 = time.time()
    while subprocess.run(ctl + ["endpoint", "health"], capture_output=True).returncode:
        if time.time() - t0 > 30: sys.exit("etcd did not start")
        time.sleep(0.1)
    logf = f"{tmp}/log.jsonl"
    print(sh("python3", f"{ROOT}/bench/gen_log.py", logf, str(N), "bench", ACCOUNT, "etcd /bench/svc/").strip(), file=sys.stderr)
    b64 = lambda b: base64.b64encode(b).decode()
    def txn(ops):
        req = urllib.request.Request(f"{ep}/v3/kv/txn", data=json.dumps({"success": ops}).encode())
        with urllib.request.urlopen(req) as r: r.read()
    stamp = json.dumps({"environment": "bench", "account": ACCOUNT, "created": "2026-01-01T00:00:00Z", "version": 1})
    txn([{"request_put": {"key": b64((STATE + "stamp").encode()), "value": b64(stamp.encode())}}])
    ops = []
    with open(logf, "rb") as f:
        for i, line in enumerate(f, 1):
            ops.append({"request_put": {"key": b64(f"{STATE}log/{i:020}".encode()), "value": b64(line.rstrip(b"\n"))}})
            if len(ops) == 1000: txn(ops); ops = []
    if ops: txn(ops)
    size = os.path.getsize(logf)
    repo = f"{tmp}/repo"
    os.makedirs(f"{repo}/environments"); os.makedirs(f"{repo}/schemas")
    open(f"{repo}/schemas/s.schema.json", "w").write('{"type": "object"}')
    open(f"{repo}/environments/bench.toml", "w").write(f'''[environment]
account = "{ACCOUNT}"
schema = "s"

[target]
kind = "etcd"
endpoints = ["{ep}"]
prefix = "/bench/svc/"
timeout = "60s"

[settings.worker]
threads = 4
''')
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "-c", "user.email=b@x", "-c", "user.name=b", "add", "-A", cwd=repo)
    sh("git", "-c", "user.email=b@x", "-c", "user.name=b", "commit", "-qm", "x", cwd=repo)
    def run():
        s = time.perf_counter()
        sh(DEPLOY, "-C", repo, "--target", "bench", "--yes")
        return time.perf_counter() - s
    first = run()  # verifies the generated log whole, applies, writes the checkpoint
    times = {"checkpoint": [], "whole log": []}
    for _ in range(RUNS):
        times["checkpoint"].append(run())
        sh(*ctl, "del", STATE + "log-checkpoint")
        times["whole log"].append(run())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"etcd log of {N} records ({size/1e6:.1f} MB); first deploy {first*1000:.0f} ms")
    for k, v in times.items():
        print(f"  no-change deploy, {k:<10}: median {med[k]*1000:8.1f} ms  (min {min(v)*1000:.1f}, max {max(v)*1000:.1f}, {len(v)} runs)")
    print(f"  whole log / checkpoint: {med['whole log']/med['checkpoint']:.1f}x")
finally:
    etcd.kill(); etcd.wait(); shutil.rmtree(tmp, ignore_errors=True)
