#!/usr/bin/env python3
"""Download and upload benchmarks: the agent against curl, aria2c and rclone, side by side.

    scripts/bench-download.sh [options]     # = python3 scripts/bench.py download [options]
    scripts/bench-upload.sh [options]       # = python3 scripts/bench.py upload [options]

Options: --size 2GiB (the single file), --files 1000 and --file-size 1MiB (the many-file
package), --rounds 3, --cases single,many, --work DIR (default target/bench, on the repo's disk).

Every case starts a fresh hub (`masv hub serve`) on loopback and, for each run of ours, a fresh
agent (`masv server start`), whose peak RSS is read from /proc/PID/status (VmHWM) when the
transfer ends; the other tools run under /usr/bin/time -v. Ours and theirs alternate (A B, then
B A) for --rounds rounds and the table shows medians. Every run is checked byte for byte
(SHA-256 of each file) before it counts.

Times: ours runs from the POST that starts the transfer to the moment the agent records it
complete (`updated_at`, ms), so link lookup, URL requests, SQLite commits, fsync of every file
(downloads) and the finalize calls (uploads) are inside it. The other tools get their URLs ready
made and are timed from start to exit; they never fsync, so for downloads the table also shows
their time once their files are synced ("+sync"), which is what the agent's own time includes.
The ratio is theirs / ours: above 1.0 the agent is faster.
"""

import argparse
import hashlib
import json
import os
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
TOOLS = {"curl": "curl", "aria2c": "aria2", "rclone": "rclone", "/usr/bin/time": "time"}


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

    def __init__(self, work, hub, name):
        self.dir = work / f"agent-{name}"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        self.log = self.dir / "agent.log"
        self.proc = subprocess.Popen(
            [MASV, "server", "start", "--listen", f"127.0.0.1:{self.port}", "--data-dir",
             self.dir / "data", "--cloud-url", f"{hub.url}/v1", "--api-key", API_KEY,
             "--insecure-no-token"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        wait_http(f"{self.api}/downloads", self.proc, "the agent", self.log)

    def run(self, kind, body):
        """Starts a transfer and waits for its end: its run (seconds, peak RSS, CPU) and the
        answer to the request that started it."""
        profile = os.environ.get("BENCH_PERF")
        if profile:
            # BENCH_PERF=FILE: a CPU profile of the agent during the transfer, for `perf report`.
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g",
                                     "-o", profile, "-p", str(self.proc.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        started = time.time()
        answer = http("POST", f"{self.api}/{kind}", body)
        tid = answer.get("download_id") or answer.get("upload_id") or answer.get("id")
        while True:
            time.sleep(0.2)
            status = http("GET", f"{self.api}/{kind}/{tid}")
            if status["state"] == "complete":
                break
            if status["state"] in ("error", "idle", "paused"):
                bad = [f for f in status.get("files") or [] if f.get("error")][:3]
                die(f"{kind} {tid} ended {status['state']}: {status.get('error')} {bad}; "
                    f"see {self.log}")
            if self.proc.poll() is not None:
                die(f"the agent died; see {self.log}")
        ended = datetime.fromisoformat(status["updated_at"].replace("Z", "+00:00")).timestamp()
        rss = peak_rss_of(self.proc.pid)
        cpu = cpu_of(self.proc.pid)
        if profile:
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


def median_row(name, runs, total):
    def median(key):
        return statistics.median(r[key] for r in runs)
    return {"tool": name, "s": median("s"), "mibs": total / MIB / median("s"),
            "rss": max(r["rss"] for r in runs), "cpu": median("cpu"),
            "server": median("server"), "all": [round(r["s"], 2) for r in runs]}


def print_table(title, rows, ours):
    """Ratio: their median time over ours (above 1.0 the agent is faster)."""
    print(f"\n{title}")
    print(f"| {'tool':<36} | {'s':>6} | {'MiB/s':>6} | {'peak RSS':>8} | {'CPU s':>5} "
          f"| {'server CPU s':>12} | {'ratio':>5} | runs (s)")
    print(f"|{'-' * 38}|{'-' * 8}|{'-' * 8}|{'-' * 10}|{'-' * 7}|{'-' * 14}|{'-' * 7}|---")
    for row in rows:
        ratio = row["s"] / ours["s"]
        print(f"| {row['tool']:<36} | {row['s']:>6.2f} | {row['mibs']:>6.0f} "
              f"| {row['rss'] / MIB:>4.0f} MiB | {row['cpu']:>5.2f} | {row['server']:>12.2f} "
              f"| {ratio:>5.2f} | {row['all']}")


def rounds(args, contenders, server):
    """Runs every contender args.rounds times, alternating the order: {name: [run, ...]}.
    `server()` is the pid of the server a contender talks to (its CPU is measured too)."""
    results = {name: [] for name, _ in contenders}
    for r in range(args.rounds):
        order = contenders if r % 2 == 0 else list(reversed(contenders))
        for name, run in order:
            os.sync()  # start every run with no dirty pages left by the one before
            before = cpu_of(server.pid)
            result = run()
            result.setdefault("server", cpu_of(server.pid) - before)
            results[name].append(result)
            print(f"  round {r + 1}: {name}: {result['s']:.2f} s", flush=True)
    return results


def bench_download(args, work):
    ensure_tools(["curl", "aria2c", "/usr/bin/time"])
    for case in args.cases:
        src, manifest = make_data(work, case, args)
        total = sum((src / rel).stat().st_size for rel in manifest)
        hub = Hub(work)
        try:
            link = upload_with_agent(work, hub, src, f"bench {case}")
            urls = hub.package_urls(link)
            out = work / "out"
            synced = {}

            def fresh():
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                return out

            def ours():
                agent = Agent(work, hub, "download")
                result, _ = agent.run("downloads", {
                    "url": link, "dst_folder": str(fresh()), "create_package_folder": False})
                verify_tree(out, manifest, "masv")
                return result

            def theirs(name, cmd):
                def run():
                    fresh()
                    result = timed(cmd(), work / f"{name.split()[0]}.log")
                    sync = fsync_tree(out)
                    verify_tree(out, manifest, name)
                    synced.setdefault(name, []).append(dict(result, s=result["s"] + sync))
                    return result
                return run

            aria_common = ["--console-log-level=warn", "--summary-interval=0",
                           "--file-allocation=falloc", "--allow-overwrite=true",
                           "--auto-file-renaming=false"]
            contenders = [("masv", ours)]
            if case == "single":
                rel, url = urls[0]
                contenders.append(("curl", theirs("curl", lambda: [
                    "curl", "-fsS", "-o", out / rel, url])))
                contenders.append(("aria2c -x16 -s16", theirs("aria2c -x16 -s16", lambda: [
                    "aria2c", "-x16", "-s16", *aria_common, "-d", out, "-o", rel, url])))
            else:
                listing = work / "aria2c.list"
                listing.write_text("".join(
                    f"{url}\n  dir={out / Path(rel).parent}\n  out={Path(rel).name}\n"
                    for rel, url in urls))
                contenders.append(("aria2c -j16 -i LIST", theirs("aria2c -j16 -i LIST", lambda: [
                    "aria2c", "-j16", *aria_common, "-i", listing])))
            results = rounds(args, contenders, hub.proc)
        finally:
            hub.close()
        rows = [median_row(n, r, total) for n, r in results.items()]
        for name, runs in synced.items():
            for run, timed_run in zip(runs, results[name]):
                run["server"] = timed_run["server"]
            rows.append(median_row(f"{name} +sync", runs, total))
        print_table(f"download, {case}: {len(manifest)} file(s), {total / MIB:.0f} MiB", rows,
                    rows[0])


def bench_upload(args, work):
    ensure_tools(["curl", "rclone", "/usr/bin/time"])
    for case in args.cases:
        src, manifest = make_data(work, case, args)
        total = sum((src / rel).stat().st_size for rel in manifest)
        hub = Hub(work)
        webdav_dir = work / "webdav"
        try:

            def ours():
                agent = Agent(work, hub, "upload")
                result, answer = agent.run("uploads", {
                    "team_id": TEAM_ID, "paths": [str(p) for p in sorted(src.iterdir())],
                    "package_name": f"bench {case}"})
                check = work / "check"
                shutil.rmtree(check, ignore_errors=True)
                for rel, url in hub.package_urls(answer["link"]):
                    (check / rel).parent.mkdir(parents=True, exist_ok=True)
                    with urllib.request.urlopen(url) as r, open(check / rel, "wb") as f:
                        shutil.copyfileobj(r, f, 4 * MIB)
                verify_tree(check, manifest, "masv")
                return result

            def curl_put():
                # One PUT of the file's bytes as part 1 of a multipart upload on the hub.
                rel = next(iter(manifest))
                size = (src / rel).stat().st_size
                pkg = hub.api("POST", f"/teams/{TEAM_ID}/packages", {"name": "bench curl"})
                pid, token = pkg["id"], pkg["access_token"]
                added = hub.api("POST", f"/packages/{pid}/files",
                                {"kind": "file", "name": rel, "path": "", "size": size},
                                token=token)
                fid = added["file"]["id"]
                with urllib.request.urlopen(urllib.request.Request(
                        added["create_blueprint"]["url"], method="POST")) as r:
                    body = r.read().decode()
                upload_id = body.split("<UploadId>")[1].split("<")[0]
                part = hub.api("POST", f"/packages/{pid}/files/{fid}?start=0&count=1",
                               {"upload_id": upload_id}, token=token)[0]["url"]
                log = work / "curl.log"
                result = timed(["curl", "-fsS", "-D", work / "curl.headers", "-o",
                                "/dev/null", "-T", src / rel, part], log)
                etag = [line.split(":", 1)[1].strip().strip('"')
                        for line in (work / "curl.headers").read_text().splitlines()
                        if line.lower().startswith("etag:")]
                md5 = hashlib.md5()
                with open(src / rel, "rb") as f:
                    while chunk := f.read(4 * MIB):
                        md5.update(chunk)
                if etag != [md5.hexdigest()]:
                    die(f"curl -T: the hub's ETag {etag} is not the file's MD5")
                return result

            def rclone(transfers):
                def run():
                    # A fresh server each time: it caches listings, and would see old files.
                    shutil.rmtree(webdav_dir, ignore_errors=True)
                    webdav_dir.mkdir(parents=True)
                    port = free_port()
                    log = work / "rclone-serve.log"
                    server = subprocess.Popen(
                        ["rclone", "serve", "webdav", "--addr", f"127.0.0.1:{port}", webdav_dir],
                        stdout=subprocess.DEVNULL, stderr=open(log, "w"))
                    try:
                        wait_http(f"http://127.0.0.1:{port}/", server, "rclone serve webdav", log)
                        result = timed([
                            "rclone", "copy", src, ":webdav:", "--webdav-url",
                            f"http://127.0.0.1:{port}", "--transfers", str(transfers)],
                            work / "rclone.log")
                        result["server"] = cpu_of(server.pid)
                    finally:
                        stop(server)
                    verify_tree(webdav_dir, manifest, "rclone")
                    return result
                return run

            contenders = [("masv", ours)]
            if case == "single":
                contenders.append(("curl -T (one PUT to the hub)", curl_put))
            contenders.append(("rclone copy (webdav, 4 transfers)", rclone(4)))
            contenders.append(("rclone copy (webdav, 16 transfers)", rclone(16)))
            results = rounds(args, contenders, hub.proc)
        finally:
            hub.close()
        rows = [median_row(n, r, total) for n, r in results.items()]
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
