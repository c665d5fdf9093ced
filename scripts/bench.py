#!/usr/bin/env python3
"""Download and upload benchmarks: the agent against peer tools with the same parallelism, side
by side on one machine, with the physical limits of the machine next to them.

    scripts/bench-download.sh [options]     # = python3 scripts/bench.py download [options]
    scripts/bench-upload.sh [options]       # = python3 scripts/bench.py upload [options]

Options: --size 2GiB (the single file), --files 1000 and --file-size 1MiB (the many-file
package), --rounds 3, --cases single,many, --work DIR (default target/bench, on the repo's disk).
Free space needed: about (rounds + 3) × the data's size (the hub keeps what the agent uploads);
delete the work folder afterwards.

Tools it needs (installed with apt-get when run as root, otherwise it stops naming them): curl,
aria2c (aria2), rclone, nginx (with its WebDAV module, as Debian builds it), dd and cp
(coreutils), /usr/bin/time (time). Not run by CI.

Every case starts a fresh hub (`masv hub serve`) on loopback and, for each run of ours, a fresh
agent (`masv server start`), whose peak RSS is read from /proc/PID/status (VmHWM) when the
transfer ends; the other tools run under /usr/bin/time -v. Contenders alternate (A B C, then
C B A) for --rounds rounds; every run is checked byte for byte (SHA-256 of each file, or the
MD5 ETags the hub answered) before it counts.

The peers, with the agent's parallelism (16 connections):
- downloads: curl, aria2c -x16, rclone copyurl (one file); `curl -Z --parallel-max 16` of the
  hub's signed URLs, `rclone copy --transfers 16` from nginx serving the same files over HTTP,
  aria2c -j16 (many files);
- uploads: `curl -Z --parallel-max 16 -T` of the very parts the agent sends, to the same hub
  (the parts cut beforehand, the multipart uploads opened beforehand: the hub's storage alone),
  one `curl -T` of the whole file as one part, `curl -Z --parallel-max 16 -T` to nginx WebDAV
  on the same disk (HTTP PUT with no protocol around it).
- physical references: curl to /dev/null (the network and the server, no disk), `dd
  oflag=direct` (the disk, no network), `cp` (a local copy).

Times: ours runs from the POST that starts the transfer to the moment the agent records it
complete (`updated_at`, ms), so link lookup, URL requests, SQLite commits, fsync of every file
(downloads) and the finalize calls (uploads) are inside it. The peers get their URLs ready made
and are timed from start to exit; they never fsync, so every peer that writes files has a
"+sync" row too: its time plus syncing what it wrote (every file and folder), which is what the
agent's own time includes. Each row shows the minimum and the median of its runs, the load
average when its runs started, the CPU seconds of the tool and of the server it talked to (the
hub or nginx) and the server's CPU per GiB moved. The ratio is the peer's median over ours:
above 1.0 the agent is faster.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MASV = ROOT / "target" / "release" / "masv"
MIB = 1024 * 1024
TEAM_ID = "01JAAAAAAAAAAAAAAAAAAAAAAA"
API_KEY = "bench-" + "k" * 40
# Command -> the Debian package that brings it.
TOOLS = {"curl": "curl", "aria2c": "aria2", "rclone": "rclone", "nginx": "nginx", "dd": "coreutils",
         "cp": "coreutils", "/usr/bin/time": "time"}
GIB = 1024 * MIB
PARALLEL = 16  # the agent's default max_connections; every peer gets as many


def die(message):
    print(f"bench: {message}", file=sys.stderr)
    sys.exit(1)


def parse_size(text):
    units = {"": 1, "B": 1, "KIB": 1024, "MIB": MIB, "GIB": 1024 * MIB, "KB": 1000,
             "MB": 1000**2, "GB": 1000**3}
    t = text.strip().upper()
    number = t.rstrip("KMGIB")
    unit = t[len(number):]
    try:
        if unit not in units:
            raise ValueError(unit)
        return int(float(number) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 2GiB, 512MiB, 4096")


def ensure_tools(commands):
    """Installs missing tools with apt-get (as root), or stops naming them."""
    missing = [c for c in commands if shutil.which(c) is None]
    if not missing:
        return
    packages = sorted({TOOLS[c] for c in missing})
    if os.geteuid() != 0:
        die(f"missing {', '.join(missing)}: install them with `apt-get install {' '.join(packages)}`")
    print(f"installing {' '.join(packages)} ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    still = [c for c in commands if shutil.which(c) is None]
    if still:
        die(f"{', '.join(still)} still missing after apt-get install {' '.join(packages)}")


def build():
    print("building masv (release) ...", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "masv"], cwd=ROOT,
                   check=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        die(f"{method} {url.split('?')[0]} answered {e.code}: {e.read().decode(errors='replace')}")


def wait_http(url, proc, what, log):
    for _ in range(300):
        if proc.poll() is not None:
            die(f"{what} exited ({proc.returncode}); see {log}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.05)
    die(f"{what} did not answer at {url}; see {log}")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def peak_rss_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    die(f"no VmHWM in /proc/{pid}/status")


def cpu_of(pid):
    """CPU seconds (user + system) a live process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Hub:
    def __init__(self, work):
        self.dir = work / "hub"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        seed = self.dir / "seed.toml"
        seed.write_text(f'[[team]]\nname = "Bench"\nid = "{TEAM_ID}"\napi_keys = ["{API_KEY}"]\n')
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "hub.log"
        self.proc = subprocess.Popen(
            [MASV, "hub", "serve", "--data", self.dir / "data", "--listen",
             f"127.0.0.1:{self.port}", "--seed", seed],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        wait_http(f"{self.url}/healthz", self.proc, "the hub", self.log)

    def api(self, method, path, body=None, token=None):
        headers = {"X-Package-Token": token} if token else {"X-API-KEY": API_KEY}
        return http(method, f"{self.url}/v1{path}", body, headers)

    def package_urls(self, link):
        """(relative path, signed GET URL) of every file behind a share link."""
        u = urllib.parse.urlparse(link)
        secret = urllib.parse.parse_qs(u.query)["secret"][0]
        info = http("GET", f"{self.url}/v1/links{u.path}?secret={secret}")
        pid, token = info["package_id"], info["package_token"]
        out = []
        for f in self.api("GET", f"/packages/{pid}/files", token=token):
            if f.get("kind", "file") != "file":
                continue
            url = self.api("GET", f"/packages/{pid}/files/{f['id']}/download", token=token)["url"]
            out.append((str(Path(f.get("path") or "") / f["name"]), url))
        return out

    def close(self):
        stop(self.proc)


class Agent:
    """A fresh agent with its own data folder, against the hub."""

    def __init__(self, work, hub, name, config=None):
        """`config`: the text of an `agent.toml` to start it with."""
        self.dir = work / f"agent-{name}"
        self.hub_pid = hub.proc.pid
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        options = []
        if config is not None:
            (self.dir / "agent.toml").write_text(config)
            options = ["--config", self.dir / "agent.toml"]
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        self.log = self.dir / "agent.log"
        self.proc = subprocess.Popen(
            [MASV, "server", "start", *options, "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", self.dir / "data", "--cloud-url", f"{hub.url}/v1", "--api-key",
             API_KEY, "--insecure-no-token"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        wait_http(f"{self.api}/downloads", self.proc, "the agent", self.log)

    def run(self, kind, body):
        """Starts a transfer and waits for its end: its run (seconds, peak RSS, CPU) and the
        answer to the request that started it."""
        # BENCH_PERF=FILE: a CPU profile of the agent during the transfer, for `perf report`;
        # BENCH_PERF_HUB=FILE: one of the hub.
        perfs = []
        for variable, pid in (("BENCH_PERF", self.proc.pid), ("BENCH_PERF_HUB", self.hub_pid)):
            profile = os.environ.get(variable)
            if profile:
                perfs.append(subprocess.Popen(
                    ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-o", profile,
                     "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if perfs:
            time.sleep(0.5)
        started = time.time()
        answer = http("POST", f"{self.api}/{kind}", body)
        tid = answer.get("download_id") or answer.get("upload_id") or answer.get("id")
        idle_since = None
        while True:
            time.sleep(0.2)
            status = http("GET", f"{self.api}/{kind}/{tid}")
            if status["state"] == "complete":
                break
            # An upload shows `idle` while its package is finalized (a 1,000-file package
            # takes a moment): only an idle that lasts is an end.
            idle_since = (idle_since or time.time()) if status["state"] == "idle" else None
            if status["state"] in ("error", "paused") or (
                    idle_since and time.time() - idle_since > 30):
                bad = [f for f in status.get("files") or [] if f.get("error")][:3]
                die(f"{kind} {tid} ended {status['state']}: {status.get('error')} {bad}; "
                    f"see {self.log}")
            if self.proc.poll() is not None:
                die(f"the agent died; see {self.log}")
        ended = datetime.fromisoformat(status["updated_at"].replace("Z", "+00:00")).timestamp()
        rss = peak_rss_of(self.proc.pid)
        cpu = cpu_of(self.proc.pid)
        for perf in perfs:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        self.close()
        return {"s": ended - started, "rss": rss, "cpu": cpu}, answer

    def close(self):
        stop(self.proc)


def timed(cmd, log):
    """Runs a tool under /usr/bin/time -v: its seconds, peak RSS and CPU seconds."""
    report = log.with_suffix(".time")
    started = time.monotonic()
    with open(log, "w") as out:
        r = subprocess.run(["/usr/bin/time", "-v", "-o", report, *map(str, cmd)],
                           stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if r.returncode != 0:
        die(f"{cmd[0]} failed ({r.returncode}); see {log}")
    fields = dict(line.strip().rsplit(": ", 1) for line in report.read_text().splitlines()
                  if ": " in line)
    try:
        return {"s": seconds, "rss": int(fields["Maximum resident set size (kbytes)"]) * 1024,
                "cpu": float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])}
    except (KeyError, ValueError):
        die(f"no peak RSS or CPU time in {report}")


def fsync_tree(root):
    """Syncs every file and folder under root, as the agent does for what it downloads."""
    started = time.monotonic()
    for dirpath, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return time.monotonic() - started


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def release_work(name):
    """Builds masv --release (under CARGO_TARGET_DIR when set) and gives an empty work folder
    `target/NAME` for a benchmark."""
    global MASV
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    MASV = target / "release" / "masv"
    build()
    work = target / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def random_file(path, size):
    """Writes `size` random (incompressible) bytes to `path`; returns their SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n
    return sha256(path)


def verify_tree(root, manifest, who):
    """Every file of the manifest under root with its bytes, and nothing else."""
    found = sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())
    if found != sorted(manifest):
        extra = set(found) - set(manifest)
        lost = set(manifest) - set(found)
        die(f"{who}: wrong files under {root}: missing {sorted(lost)[:3]}, extra {sorted(extra)[:3]}")
    for rel, digest in manifest.items():
        if sha256(Path(root) / rel) != digest:
            die(f"{who}: {rel} arrived with other bytes")


def agent_cells(runs, size, base):
    """The table cells of an agent's runs moving `size` bytes, against `base` seconds: median
    time, MiB/s, median CPU, peak RSS and the time's ratio to `base`."""
    t = statistics.median(r["s"] for r in runs)
    cpu = statistics.median(r["cpu"] for r in runs)
    rss = max(r["rss"] for r in runs)
    return (f"{t:.2f} s | {size / (1 << 20) / t:.0f} | {cpu:.2f} s | {rss / (1 << 20):.0f} MiB "
            f"| {t / base:.3f}")


def make_data(work, case, args):
    """The source folder of a case and its manifest {relative path: sha256}; kept between runs."""
    if case == "single":
        spec = {"size": args.size}
    else:
        spec = {"files": args.files, "file_size": args.file_size}
    name = "-".join(f"{k}{v}" for k, v in spec.items())
    src = work / f"src-{case}-{name}"
    stamp = work / f"src-{case}-{name}.json"
    if stamp.exists() and json.loads(stamp.read_text())["spec"] == spec:
        return src, json.loads(stamp.read_text())["manifest"]
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    print(f"making the {case} data ...", flush=True)
    manifest = {}
    if case == "single":
        targets = [("video.mov", args.size)]
    else:
        # Ten folders of files, as a shoot's card dumps would be.
        targets = [(f"card{i % 10:02}/clip{i:04}.mov", args.file_size) for i in range(args.files)]
    for rel, size in targets:
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with open(path, "wb") as f:
            left = size
            while left:
                block = os.urandom(min(left, 8 * MIB))
                h.update(block)
                f.write(block)
                left -= len(block)
        manifest[rel] = h.hexdigest()
    stamp.write_text(json.dumps({"spec": spec, "manifest": manifest}))
    return src, manifest


def upload_with_agent(work, hub, src, name):
    """Puts src on the hub as a link package with an agent; returns the share link."""
    agent = Agent(work, hub, "setup")
    _, answer = agent.run("uploads", {
        "team_id": TEAM_ID, "paths": [str(p) for p in sorted(src.iterdir())],
        "package_name": name})
    return answer["link"]


def tree_cpu(pid):
    """CPU seconds of a process and its children (nginx: the master and its workers)."""
    total = cpu_of(pid)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Nginx:
    """nginx on loopback: GET of `files` (with listings, for rclone's HTTP remote) under
    /files/, and WebDAV PUT into `dav` under /dav/, its temporary files on the same disk."""

    def __init__(self, work, files, dav):
        self.dir = work / "nginx"
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "tmp").mkdir(parents=True)
        self.dav = dav
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = self.dir / "nginx.conf"
        temps = "".join(f"  {k}_temp_path {self.dir / 'tmp' / k};\n"
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf.write_text(f"""daemon off;
user root;
worker_processes 2;
pid {self.dir / 'nginx.pid'};
error_log {self.dir / 'error.log'} warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
{temps}  server {{
    listen 127.0.0.1:{self.port};
    location /files/ {{ alias {files}/; autoindex on; }}
    location /dav/ {{
      alias {dav}/;
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 0;
    }}
  }}
}}
""")
        self.log = self.dir / "error.log"
        self.proc = subprocess.Popen(["nginx", "-c", conf, "-p", self.dir, "-e", self.log],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "out", "w"))
        wait_http(f"{self.url}/files/", self.proc, "nginx", self.log)
        self.pid = self.proc.pid

    def fresh_dav(self):
        shutil.rmtree(self.dav, ignore_errors=True)
        self.dav.mkdir(parents=True)

    def close(self):
        stop(self.proc)


def curl_batch(work, name, transfers, upload):
    """`curl -Z --parallel-max 16` over (local path, URL) pairs, from a config file; uploads
    print each answer's ETag (to check), downloads write the files."""
    config = work / f"{name}.curl"
    key = "upload-file" if upload else "output"
    config.write_text("".join(f'url = "{url}"\n{key} = "{path}"\n' for path, url in transfers))
    cmd = ["curl", "-Z", "--parallel-max", str(PARALLEL), "-fsS", "--no-progress-meter",
           "--create-dirs", "-K", config]
    if upload:
        cmd += ["-o", "/dev/null", "-w", "%header{etag}\\n"]
    return cmd


def row(name, runs, total, server_name):
    def median(key):
        return statistics.median(r[key] for r in runs)
    seconds = [r["s"] for r in runs]
    return {"tool": name, "min": min(seconds), "s": median("s"), "mibs": total / MIB / median("s"),
            "rss": max(r["rss"] for r in runs), "cpu": median("cpu"),
            "server": median("server"), "per_gib": median("server") / (total / GIB),
            "server_name": server_name, "load": statistics.mean(r["load"] for r in runs)}


def print_table(title, rows, ours):
    """Ratio: the row's median time over ours (above 1.0 the agent is faster)."""
    print(f"\n{title}")
    print("| tool | min s | median s | MiB/s | peak RSS | CPU s | server CPU s (per GiB) | load "
          "| ratio |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        server = (f"{r['server_name']} {r['server']:.2f} ({r['per_gib']:.2f})"
                  if r["server_name"] else "–")
        rss = f"{r['rss'] / MIB:.0f} MiB" if r["rss"] else "–"
        print(f"| {r['tool']} | {r['min']:.2f} | {r['s']:.2f} | {r['mibs']:.0f} | {rss} "
              f"| {r['cpu']:.2f} | {server} | {r['load']:.1f} | {r['s'] / ours['s']:.2f} |")


class Contender:
    """One tool's way of doing the case. `run()` returns {s, rss, cpu}; `synced` (a folder)
    makes a "+sync" row of the same runs plus the time to sync that folder. `server` is the
    pid whose CPU counts as the server's."""

    def __init__(self, name, run, server, server_name, synced=None, check=None):
        self.name, self.run, self.server, self.server_name = name, run, server, server_name
        self.synced, self.check = synced, check


def rounds(args, contenders, total):
    """Runs every contender args.rounds times, alternating the order; the rows of the table."""
    results = {c.name: [] for c in contenders}
    synced = {c.name: [] for c in contenders if c.synced}
    for r in range(args.rounds):
        order = contenders if r % 2 == 0 else list(reversed(contenders))
        for c in order:
            os.sync()  # start every run with no dirty pages left by the one before
            load = os.getloadavg()[0]
            before = tree_cpu(c.server) if c.server else 0
            result = c.run()
            result["server"] = (tree_cpu(c.server) - before) if c.server else 0
            result["load"] = load
            line = f"  round {r + 1}: {c.name}: {result['s']:.2f} s"
            if c.synced:
                sync = fsync_tree(c.synced)
                synced[c.name].append(dict(result, s=result["s"] + sync))
                line += f" (+sync {result['s'] + sync:.2f} s)"
            if c.check:
                c.check()
            results[c.name].append(result)
            print(line, flush=True)
    rows = []
    for c in contenders:
        rows.append(row(c.name, results[c.name], total, c.server_name))
        if c.synced:
            rows.append(row(f"{c.name} +sync", synced[c.name], total, c.server_name))
    return rows


def bench_download(args, work):
    ensure_tools(["curl", "aria2c", "rclone", "nginx", "dd", "cp", "/usr/bin/time"])
    for case in args.cases:
        src, manifest = make_data(work, case, args)
        total = sum((src / rel).stat().st_size for rel in manifest)
        hub = Hub(work)
        nginx = Nginx(work, src, work / "dav")
        out = work / "out"

        def fresh():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            return out

        try:
            link = upload_with_agent(work, hub, src, f"bench {case}")
            urls = hub.package_urls(link)

            def ours():
                agent = Agent(work, hub, "download")
                result, _ = agent.run("downloads", {
                    "url": link, "dst_folder": str(fresh()), "create_package_folder": False})
                return result

            def tool(name, cmd):
                def run():
                    fresh()
                    return timed(cmd(), work / f"{name.split()[0]}.log")
                return run

            def verified(who):
                return lambda: verify_tree(out, manifest, who)

            hub_pid = hub.proc.pid
            aria_common = ["--console-log-level=warn", "--summary-interval=0",
                           "--file-allocation=falloc", "--allow-overwrite=true",
                           "--auto-file-renaming=false"]
            cs = [Contender("masv", ours, hub_pid, "hub", check=verified("masv"))]
            if case == "single":
                rel, url = urls[0]
                cs += [
                    Contender("curl", tool("curl", lambda: ["curl", "-fsS", "-o", out / rel, url]),
                              hub_pid, "hub", synced=out, check=verified("curl")),
                    Contender("aria2c -x16 -s16", tool("aria2c", lambda: [
                        "aria2c", "-x16", "-s16", *aria_common, "-d", out, "-o", rel, url]),
                        hub_pid, "hub", synced=out, check=verified("aria2c")),
                    Contender("rclone copyurl", tool("rclone", lambda: [
                        "rclone", "copyurl", url, out / rel]),
                        hub_pid, "hub", synced=out, check=verified("rclone")),
                    Contender("ref: curl → /dev/null", tool("curl", lambda: [
                        "curl", "-fsS", "-o", "/dev/null", url]), hub_pid, "hub"),
                    Contender("ref: dd oflag=direct (disk)", tool("dd", lambda: [
                        "dd", f"if={src / rel}", f"of={out / rel}", "bs=4M", "oflag=direct",
                        "status=none"]), None, None, check=verified("dd")),
                ]
            else:
                listing = work / "aria2c.list"
                listing.write_text("".join(
                    f"{url}\n  dir={out / Path(rel).parent}\n  out={Path(rel).name}\n"
                    for rel, url in urls))
                cs += [
                    Contender(f"rclone copy --transfers {PARALLEL} (HTTP, nginx)",
                              tool("rclone", lambda: [
                                  "rclone", "copy", ":http:", out, "--http-url",
                                  f"{nginx.url}/files/", "--transfers", str(PARALLEL)]),
                              nginx.pid, "nginx", synced=out, check=verified("rclone")),
                    Contender(f"curl -Z --parallel-max {PARALLEL}", tool("curl", lambda: curl_batch(
                        work, "download", [(out / rel, url) for rel, url in urls], False)),
                        hub_pid, "hub", synced=out, check=verified("curl -Z")),
                    Contender(f"aria2c -j{PARALLEL}", tool("aria2c", lambda: [
                        "aria2c", f"-j{PARALLEL}", *aria_common, "-i", listing]),
                        hub_pid, "hub", synced=out, check=verified("aria2c")),
                    Contender("ref: curl -Z → /dev/null", tool("curl", lambda: curl_batch(
                        work, "null", [("/dev/null", url) for _, url in urls], False)),
                        hub_pid, "hub"),
                    Contender("ref: cp -r (local copy)", tool("cp", lambda: [
                        "cp", "-r", f"{src}/.", out]), None, None, synced=out,
                        check=verified("cp")),
                ]
            rows = rounds(args, cs, total)
        finally:
            hub.close()
            nginx.close()
        print_table(f"download, {case}: {len(manifest)} file(s), {total / MIB:.0f} MiB", rows,
                    rows[0])


def open_parts(hub, src, manifest, part_size):
    """Declares every file of the manifest in a fresh package on the hub and opens its
    multipart upload: [(path of the part's bytes, its PUT URL, its MD5)] and the upload ids, the
    parts cut from the files beforehand (as the agent reads them: `part_size` bytes each)."""
    pkg = hub.api("POST", f"/teams/{TEAM_ID}/packages", {"name": "bench curl"})
    pid, token = pkg["id"], pkg["access_token"]
    parts_dir = hub.dir / "curl-parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir()
    out, uploads = [], []
    for n, rel in enumerate(manifest):
        size = (src / rel).stat().st_size
        added = hub.api("POST", f"/packages/{pid}/files",
                        {"kind": "file", "name": Path(rel).name,
                         "path": "" if Path(rel).parent == Path(".") else str(Path(rel).parent),
                         "size": size}, token=token)
        fid = added["file"]["id"]
        with urllib.request.urlopen(urllib.request.Request(
                added["create_blueprint"]["url"], method="POST")) as r:
            upload_id = r.read().decode().split("<UploadId>")[1].split("<")[0]
        count = max(1, -(-size // part_size))
        urls = hub.api("POST", f"/packages/{pid}/files/{fid}?start=0&count={count}",
                       {"upload_id": upload_id}, token=token)
        with open(src / rel, "rb") as f:
            for i, u in enumerate(urls):
                data = f.read(part_size)
                path = parts_dir / f"{n}.{i}"
                path.write_bytes(data)
                out.append((path, u["url"], hashlib.md5(data).hexdigest()))
        uploads.append(upload_id)
    return out, uploads


def bench_upload(args, work):
    ensure_tools(["curl", "nginx", "dd", "/usr/bin/time"])
    for case in args.cases:
        src, manifest = make_data(work, case, args)
        total = sum((src / rel).stat().st_size for rel in manifest)
        hub = Hub(work)
        nginx = Nginx(work, src, work / "dav")
        files = sorted(manifest)
        try:
            part_size = http("GET", f"{hub.url}/v1/system/packages/spec")["default_chunk_size"]

            uploaded = {}

            def ours():
                agent = Agent(work, hub, "upload")
                result, uploaded["answer"] = agent.run("uploads", {
                    "team_id": TEAM_ID, "paths": [str(p) for p in sorted(src.iterdir())],
                    "package_name": f"bench {case}"})
                return result

            def check_ours():
                # After the run: the hub's CPU for serving this check is not the upload's.
                check = work / "check"
                shutil.rmtree(check, ignore_errors=True)
                for rel, url in hub.package_urls(uploaded["answer"]["link"]):
                    (check / rel).parent.mkdir(parents=True, exist_ok=True)
                    with urllib.request.urlopen(url) as r, open(check / rel, "wb") as f:
                        shutil.copyfileobj(r, f, 4 * MIB)
                verify_tree(check, manifest, "masv")

            def curl_hub(size):
                def run():
                    parts, uploads = open_parts(hub, src, manifest, size)
                    log = work / "curl-hub.log"
                    result = timed(curl_batch(work, "hub", [(p, u) for p, u, _ in parts], True),
                                   log)
                    etags = sorted(re.findall(r'^"?([0-9a-f]{32})"?$', log.read_text(), re.M))
                    if etags != sorted(md5 for _, _, md5 in parts):
                        die(f"curl -T to the hub: the ETags answered are not the parts' MD5s; "
                            f"see {log}")
                    # Never finalized: the stored parts only fill the disk run after run.
                    shutil.rmtree(hub.dir / "curl-parts", ignore_errors=True)
                    for upload in uploads:
                        shutil.rmtree(hub.dir / "data" / "parts" / upload, ignore_errors=True)
                    return result
                return run

            def curl_dav():
                nginx.fresh_dav()
                return timed(curl_batch(work, "dav", [(src / rel, f"{nginx.url}/dav/{rel}")
                                                      for rel in files], True),
                             work / "curl-dav.log")

            cs = [Contender("masv", ours, hub.proc.pid, "hub", check=check_ours)]
            cs.append(Contender(f"curl -Z --parallel-max {PARALLEL} -T, same parts, same hub",
                                curl_hub(part_size), hub.proc.pid, "hub"))
            if case == "single":
                cs.append(Contender("curl -T, the file as one part, same hub",
                                    curl_hub(max(total, 1)), hub.proc.pid, "hub"))
            cs.append(Contender(f"curl -Z --parallel-max {PARALLEL} -T to nginx WebDAV", curl_dav,
                                nginx.pid, "nginx", synced=work / "dav",
                                check=lambda: verify_tree(work / "dav", manifest, "nginx")))
            if case == "single":
                rel = files[0]

                def dd():
                    (work / "dd").mkdir(exist_ok=True)
                    return timed(["dd", f"if={src / rel}", f"of={work / 'dd' / 'out'}", "bs=4M",
                                  "oflag=direct", "status=none"], work / "dd.log")
                cs.append(Contender("ref: dd oflag=direct (disk)", dd, None, None))
            rows = rounds(args, cs, total)
        finally:
            hub.close()
            nginx.close()
        print_table(f"upload, {case}: {len(manifest)} file(s), {total / MIB:.0f} MiB", rows,
                    rows[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("direction", choices=["download", "upload"])
    p.add_argument("--size", type=parse_size, default=parse_size("2GiB"))
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--file-size", type=parse_size, default=parse_size("1MiB"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", default="single,many")
    p.add_argument("--work", type=Path, default=ROOT / "target" / "bench")
    p.add_argument("--no-build", action="store_true", help="use target/release/masv as it is")
    args = p.parse_args()
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in args.cases:
        if c not in ("single", "many"):
            die(f"--cases: {c!r} is not a case; use single, many or single,many")
    if args.rounds < 1 or args.files < 1 or args.size < 1:
        die("--rounds, --files and --size must be at least 1")
    if not args.no_build:
        build()
    if not MASV.exists():
        die(f"{MASV} is missing: build it with `cargo build --release`")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}; work in {work}")
    if args.direction == "download":
        bench_download(args, work)
    else:
        bench_upload(args, work)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
