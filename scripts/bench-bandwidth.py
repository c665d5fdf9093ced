#!/usr/bin/env python3
"""How well the agent keeps to a rate limit, beside curl --limit-rate on the same storage URLs.

    python3 scripts/bench-bandwidth.py [--size 256MiB] [--limits 20MiB,80MiB,400Mbit] [--work DIR]

One hub (`masv hub serve`) on loopback holds one file. For every limit, a fresh agent (release
build, `[bandwidth]` from its config file) downloads the file and uploads it back, and curl
moves the same bytes with `--limit-rate` (a GET of the file's signed URL; a PUT of one part).
The table shows each one's rate as a ratio of the limit (1.00 is exact; above 1.00 the limit
was exceeded) and the agent's peak RSS; an unlimited row shows the ceiling of this machine.
Agent times run from the POST to the moment the agent records the transfer complete; curl's
from start to exit.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MASV = ROOT / "target" / "release" / "masv"
MIB = 1024 * 1024
TEAM_ID = "01JAAAAAAAAAAAAAAAAAAAAAAA"
API_KEY = "bench-" + "k" * 40


def die(message):
    print(f"bench-bandwidth: {message}", file=sys.stderr)
    sys.exit(1)


def rate(text):
    """Bytes per second of "20MiB" or "400Mbit" (the agent parses these itself too)."""
    t = text.strip()
    for unit, factor in {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}.items():
        if t.lower().endswith(unit):
            return int(float(t[:-4]) * factor / 8)
    units = {"KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}
    for unit, factor in units.items():
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * factor)
    if not t.isdigit():
        die(f"{text!r} is not a rate; write e.g. 20MiB, 400Mbit or bytes per second")
    return int(t)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            raw = r.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        die(f"{method} {url.split('?')[0]} answered {e.code}: {e.read().decode(errors='replace')}")


def serve(cmd, url, log):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    for _ in range(300):
        if proc.poll() is not None:
            die(f"{cmd[1]} exited ({proc.returncode}); see {log}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return proc
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.05)
    die(f"{cmd[1]} did not answer at {url}; see {log}")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def agent_run(work, hub, limit, kind, body):
    """A fresh agent limited to `limit` runs one transfer: (seconds, peak RSS, answer)."""
    d = work / f"agent-{kind}-{limit}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    port = free_port()
    section = "" if limit == "unlimited" else f'[bandwidth]\nupload = "{limit}"\ndownload = "{limit}"\n'
    (d / "agent.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\ndata_dir = "data"\ncloud_url = "{hub}/v1"\n'
        f'api_key = "{API_KEY}"\n\n{section}')
    api = f"http://127.0.0.1:{port}/api/v1"
    proc = serve([MASV, "server", "start", "--config", d / "agent.toml", "--insecure-no-token"],
                 f"{api}/bandwidth",
                 d / "agent.log")
    started = time.time()
    answer = http("POST", f"{api}/{kind}", body)
    tid = answer.get("download_id") or answer.get("upload_id")
    while True:
        time.sleep(0.1)
        status = http("GET", f"{api}/{kind}/{tid}")
        if status["state"] == "complete":
            break
        if status["state"] in ("error", "idle", "paused"):
            die(f"{kind} {tid} ended {status['state']}: {status.get('error')}; see {d}/agent.log")
    ended = datetime.fromisoformat(status["updated_at"].replace("Z", "+00:00")).timestamp()
    with open(f"/proc/{proc.pid}/status") as f:
        rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    stop(proc)
    return ended - started, rss, answer


def curl(args):
    started = time.monotonic()
    r = subprocess.run(["curl", "-fsS", *map(str, args)], stdout=subprocess.DEVNULL)
    if r.returncode != 0:
        die(f"curl {args[0]} failed ({r.returncode})")
    return time.monotonic() - started


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="256MiB")
    p.add_argument("--limits", default="20MiB,80MiB,400Mbit,unlimited")
    p.add_argument("--work", type=Path, default=ROOT / "target" / "bench-bandwidth")
    args = p.parse_args()
    if shutil.which("curl") is None:
        die("curl is missing: install it with `apt-get install curl`")
    size = rate(args.size)
    print("building masv (release) ...", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "masv"], cwd=ROOT, check=True)
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    (work / "hub").mkdir(parents=True)
    (work / "hub/seed.toml").write_text(
        f'[[team]]\nname = "Bench"\nid = "{TEAM_ID}"\napi_keys = ["{API_KEY}"]\n')
    source = work / "source.bin"
    with open(source, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
    port = free_port()
    hub = f"http://127.0.0.1:{port}"
    hub_proc = serve([MASV, "hub", "serve", "--data", work / "hub/data", "--listen",
                      f"127.0.0.1:{port}", "--seed", work / "hub/seed.toml"], f"{hub}/healthz",
                     work / "hub/hub.log")
    try:
        link = subprocess.run([ROOT / "scripts/hub-upload.sh", hub, TEAM_ID, API_KEY, "Bench",
                               source], check=True, capture_output=True, text=True).stdout.strip()
        secret = link.split("secret=")[1]
        info = http("GET", f"{hub}/v1/links/{link.split('/')[-1].split('?')[0]}?secret={secret}")
        pid, token = info["package_id"], info["package_token"]
        fid = http("GET", f"{hub}/v1/packages/{pid}/files", headers={"X-Package-Token": token})[0]["id"]
        get_url = http("GET", f"{hub}/v1/packages/{pid}/files/{fid}/download",
                       headers={"X-Package-Token": token})["url"]
        print(f"{args.size} on loopback, one file; rate / limit (1.00 = exact)\n")
        print(f"{'limit':>10} {'dir':>4} {'agent MiB/s':>12} {'agent/limit':>12} "
              f"{'curl MiB/s':>11} {'curl/limit':>11} {'agent/curl':>11} {'agent RSS':>10}")
        for limit in args.limits.split(","):
            bps = None if limit == "unlimited" else rate(limit)
            dst = work / "dst"
            shutil.rmtree(dst, ignore_errors=True)
            ours, rss, _ = agent_run(work, hub, limit, "downloads",
                                     {"url": link, "dst_folder": str(dst)})
            limit_args = [] if bps is None else ["--limit-rate", str(bps)]
            theirs = curl([get_url, "-o", work / "curl.bin", *limit_args])
            row(limit, "down", size, ours, theirs, bps, rss)
            ours, rss, _ = agent_run(work, hub, limit, "uploads",
                                     {"team_id": TEAM_ID, "paths": [str(source)],
                                      "chunk_size": "64MiB"})
            theirs = curl_put(hub, source, limit_args)
            row(limit, "up", size, ours, theirs, bps, rss)
    finally:
        stop(hub_proc)


def curl_put(hub, source, limit_args):
    """curl -T of the whole file as one part of a fresh multipart upload."""
    headers = {"X-API-KEY": API_KEY}
    pkg = http("POST", f"{hub}/v1/teams/{TEAM_ID}/packages", {"name": "curl"}, headers)
    token = {"X-Package-Token": pkg["access_token"]}
    added = http("POST", f"{hub}/v1/packages/{pkg['id']}/files",
                 {"kind": "file", "name": "curl.bin", "path": "", "size": source.stat().st_size},
                 token)
    created = urllib.request.urlopen(urllib.request.Request(
        added["create_blueprint"]["url"], method="POST"), timeout=60).read().decode()
    upload_id = created.split("<UploadId>")[1].split("<")[0]
    fid = added["file"]["id"]
    url = http("POST", f"{hub}/v1/packages/{pkg['id']}/files/{fid}?start=0&count=1",
               {"upload_id": upload_id}, token)[0]["url"]
    return curl(["-X", "PUT", "-T", source, url, *limit_args])


def row(limit, direction, size, ours, theirs, bps, rss):
    a, c = size / ours / MIB, size / theirs / MIB
    ratio = (lambda r: f"{r * MIB / bps:.2f}") if bps else (lambda r: "-")
    print(f"{limit:>10} {direction:>4} {a:>12.1f} {ratio(a):>12} {c:>11.1f} {ratio(c):>11} "
          f"{a / c:>11.2f} {rss / MIB:>8.0f}Mi", flush=True)


if __name__ == "__main__":
    main()
