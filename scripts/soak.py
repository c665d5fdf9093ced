#!/usr/bin/env python3
"""Crash soak: random `kill -9`s of the agent across long transfers, and uploads through a
proxy that cuts connections; prints what a user would lose.

    python3 scripts/soak.py [--kills 50] [--files 500] [--file-size 64KiB] [--big 1GiB]
                            [--lossy-runs 20] [--cases download,upload,big-download,big-upload,lossy]
                            [--work target/soak]

Every case runs against a fresh hub (`masv hub serve`, release build) on loopback. A kill case
starts a transfer, then kills the agent (SIGKILL) after a random 0.05 to 1.5 s and starts it
again on the same data folder, over and over; a transfer that completes is checked and the next
one starts, until --kills kills are done and the last transfer has completed. Checks: downloads,
every file's SHA-256 against the package and no part file left; uploads, the package holds
exactly one finalized entry per file with the bytes sent (SHA-256). "undeliverable" counts
transfers that ended in error or never completed. "re-sent per kill" is the bytes storage
moved beyond what the completed transfers needed, per kill, against what may be in flight
(connections x chunk or part size).

The lossy case puts a TCP proxy in front of the hub (its public URL, so storage goes through it
too) that cuts 30 % of connections after at most 4 KiB, half on the way up and half on the way
back, and sends a --files upload --lossy-runs times.
"""

import argparse
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the hub, HTTP and tree helpers the benchmarks use)
from bench import API_KEY, MIB, TEAM_ID, die, free_port, http, parse_size, stop, wait_http  # noqa: E402

CONNECTIONS = 16          # the agent's default --max-connections
DOWNLOAD_CHUNK = 16 * MIB  # the agent's default --chunk-size
UPLOAD_PART = 100 * MIB    # the default part size (smaller files: one part of their size)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            h.update(block)
    return h.hexdigest()


def hub_counter(hub_url, name):
    text = urllib.request.urlopen(f"{hub_url}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    die(f"the hub has no {name}")


class Agent:
    """An agent on a data folder that outlives it: killed and started again."""

    def __init__(self, work, hub_url):
        self.dir = work / "agent"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.hub_url = hub_url
        self.proc = None
        self.start()

    def start(self):
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        self.log = self.dir / "agent.log"
        self.proc = subprocess.Popen(
            [bench.MASV, "server", "start", "--listen", f"127.0.0.1:{self.port}", "--data-dir",
             self.dir / "data", "--cloud-url", f"{self.hub_url}/v1", "--api-key", API_KEY,
             "--insecure-no-token"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "a"))
        wait_http(f"{self.api}/downloads", self.proc, "the agent", self.log)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def status(self, kind, tid):
        return http("GET", f"{self.api}/{kind}/{tid}")

    def close(self):
        stop(self.proc)


def make_files(root, count, size, big):
    """`count` files of about `size` bytes in nested folders, or one file of `big` bytes."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    manifest = {}
    rng = random.Random(7)
    if big:
        path = root / "master.mxf"
        with open(path, "wb") as f:
            left = big
            while left:
                n = min(left, 8 * MIB)
                f.write(rng.randbytes(n))
                left -= n
        manifest["master.mxf"] = sha256(path)
        return manifest
    for i in range(count):
        folder = root / f"reel {i % 7}" / f"scene {i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"take {i:04}.wav"
        path.write_bytes(rng.randbytes(rng.randint(0, 2 * size)))
        manifest[str(path.relative_to(root))] = sha256(path)
    return manifest


def wait_end(agent, kind, tid, limit=600):
    started = time.time()
    while time.time() - started < limit:
        status = agent.status(kind, tid)
        if status["state"] in ("complete", "error"):
            return status
        time.sleep(0.2)
    return agent.status(kind, tid)


def check_download(dst, manifest, package):
    """Corrupt files (missing or different) and part files left behind."""
    root = dst / package / "day 1"
    corrupt = sum(1 for rel, digest in manifest.items()
                  if not (root / rel).is_file() or sha256(root / rel) != digest)
    parts = [p for p in dst.rglob("*.part")]
    return corrupt + len(parts)


def check_upload(hub, link, manifest):
    """Entries missing, duplicated, unfinalized or with other bytes than sent."""
    u = urllib.parse.urlparse(link)
    secret = urllib.parse.parse_qs(u.query)["secret"][0]
    info = http("GET", f"{hub.url}/v1/links{u.path}?secret={secret}")
    pid, token = info["package_id"], info["package_token"]
    files = [f for f in hub.api("GET", f"/packages/{pid}/files", token=token)
             if f.get("kind", "file") == "file"]
    bad = abs(len(files) - len(manifest))
    for f in files:
        rel = str(Path(f.get("path") or "") / f["name"])
        rel = rel.split("/", 1)[1] if "/" in rel else rel  # without the sent folder's name
        url = hub.api("GET", f"/packages/{pid}/files/{f['id']}/download", token=token)["url"]
        h = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=120) as r:
            for block in iter(lambda: r.read(4 * MIB), b""):
                h.update(block)
        if manifest.get(rel) != h.hexdigest():
            bad += 1
    return bad


def kill_case(args, work, name, big):
    kind = "downloads" if "download" in name else "uploads"
    hub = bench.Hub(work / name)
    src = work / name / "src" / "day 1"
    manifest = make_files(src, args.files, args.file_size, big)
    total = sum((src / rel).stat().st_size for rel in manifest)
    link = None
    if kind == "downloads":
        link = bench.upload_with_agent(work / name, hub, src.parent, "soak")
    agent = Agent(work / name, hub.url)
    moved_before = hub_counter(hub.url, "masv_hub_storage_bytes_sent_total"
                               if kind == "downloads" else "masv_hub_storage_bytes_received_total")
    kills = transfers = corrupt = undeliverable = 0
    rng = random.Random(11)
    started = time.time()
    while kills < args.kills:
        transfers += 1
        dst = work / name / f"dst-{transfers}"
        shutil.rmtree(dst, ignore_errors=True)
        if kind == "downloads":
            answer = http("POST", f"{agent.api}/downloads", {"url": link, "dst_folder": str(dst)})
            tid = answer["download_id"]
        else:
            answer = http("POST", f"{agent.api}/uploads", {
                "team_id": TEAM_ID, "paths": [str(src)], "package_name": f"soak {transfers}"})
            tid = answer["upload_id"]
        while kills < args.kills:
            time.sleep(rng.uniform(0.05, 1.5))
            if agent.status(kind, tid)["state"] in ("complete", "error"):
                break
            agent.kill9()
            kills += 1
            agent.start()
        status = wait_end(agent, kind, tid)
        if status["state"] != "complete":
            undeliverable += 1
            print(f"  {name}: transfer {tid} ended {status['state']}: {status.get('error')}")
            continue
        if kind == "downloads":
            corrupt += check_download(dst, manifest, "soak")
            shutil.rmtree(dst, ignore_errors=True)
        else:
            corrupt += check_upload(hub, status["link"], manifest)
        http("DELETE", f"{agent.api}/{kind}/{tid}")
    moved = hub_counter(hub.url, "masv_hub_storage_bytes_sent_total"
                        if kind == "downloads" else "masv_hub_storage_bytes_received_total")
    moved -= moved_before
    delivered = (transfers - undeliverable) * total
    unit = DOWNLOAD_CHUNK if kind == "downloads" else min(UPLOAD_PART, max(
        (src / rel).stat().st_size for rel in manifest))
    agent.close()
    hub.close()
    return {
        "case": name, "kills": kills, "transfers": transfers,
        "files checked": (transfers - undeliverable) * len(manifest), "corrupt": corrupt,
        "undeliverable": undeliverable,
        "re-sent/kill": f"{max(0, moved - delivered) / max(kills, 1) / MIB:.1f} MiB",
        "in flight": f"{CONNECTIONS} x {unit / MIB:.1f} MiB", "s": round(time.time() - started),
    }


class LossProxy:
    """Cuts `ratio` of the connections after at most `max_bytes`, half on the way up, half on
    the way back (after the request reached the hub)."""

    def __init__(self, upstream_port, ratio=0.3, max_bytes=4096):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.upstream = upstream_port
        self.ratio, self.max_bytes = ratio, max_bytes
        self.cuts = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            client, _ = self.sock.accept()
            threading.Thread(target=self.connection, args=(client,), daemon=True).start()

    def connection(self, client):
        try:
            server = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            client.close()
            return
        cut = random.random() < self.ratio
        upward = random.random() < 0.5
        after = random.randint(1, self.max_bytes)
        limits = {"up": after if cut and upward else None,
                  "down": after if cut and not upward else None}
        done = threading.Event()

        def pipe(src, dst, limit):
            left = limit
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    if left is not None:
                        data = data[:left]
                        left -= len(data)
                    dst.sendall(data)
                    if left == 0:
                        self.cuts += 1
                        done.set()
                        return
            except OSError:
                done.set()

        up = threading.Thread(target=pipe, args=(client, server, limits["up"]), daemon=True)
        down = threading.Thread(target=pipe, args=(server, client, limits["down"]), daemon=True)
        up.start()
        down.start()
        while not done.is_set() and (up.is_alive() or down.is_alive()):
            done.wait(0.5)
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def lossy_case(args, work):
    name = "lossy-upload"
    base = work / name
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    # The hub answers as the proxy: signed storage URLs go through it too.
    hub_port = free_port()
    proxy = LossProxy(hub_port, ratio=0.0)
    seed = base / "seed.toml"
    seed.write_text(f'[[team]]\nname = "Soak"\nid = "{TEAM_ID}"\napi_keys = ["{API_KEY}"]\n')
    log = base / "hub.log"
    proc = subprocess.Popen(
        [bench.MASV, "hub", "serve", "--data", base / "data", "--listen",
         f"127.0.0.1:{hub_port}", "--seed", seed, "--public-url",
         f"http://127.0.0.1:{proxy.port}/"],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    wait_http(f"http://127.0.0.1:{hub_port}/healthz", proc, "the hub", log)
    hub = type("H", (), {})()
    hub.url = f"http://127.0.0.1:{proxy.port}"
    hub.api = lambda method, path, body=None, token=None: http(
        method, f"{hub.url}/v1{path}", body,
        {"X-Package-Token": token} if token else {"X-API-KEY": API_KEY})
    src = base / "src" / "day 1"
    manifest = make_files(src, args.files, args.file_size, 0)
    agent = Agent(base, hub.url)
    corrupt = undeliverable = 0
    started = time.time()
    for run in range(args.lossy_runs):
        proxy.ratio = 0.3
        answer = None
        for _ in range(30):  # the package is created by the request itself, not retried
            try:
                answer = http_quiet("POST", f"{agent.api}/uploads", {
                    "team_id": TEAM_ID, "paths": [str(src)], "package_name": f"lossy {run}"})
                break
            except Exception:
                time.sleep(0.2)
        if answer is None:
            die("no upload could be created through the lossy proxy in 30 tries")
        status = wait_end(agent, "uploads", answer["upload_id"])
        proxy.ratio = 0.0
        if status["state"] != "complete":
            undeliverable += 1
            print(f"  lossy run {run}: {status['state']}: {status.get('error')}")
            continue
        corrupt += check_upload(hub, status["link"], manifest)
    cuts = proxy.cuts
    agent.close()
    stop(proc)
    return {"case": name, "runs": args.lossy_runs, "cuts": cuts,
            "files checked": (args.lossy_runs - undeliverable) * len(manifest),
            "corrupt": corrupt, "undeliverable": undeliverable, "s": round(time.time() - started)}


def http_quiet(method, url, body):
    import json
    import urllib.request
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--files", type=int, default=500)
    p.add_argument("--file-size", type=parse_size, default=parse_size("64KiB"))
    p.add_argument("--big", type=parse_size, default=parse_size("1GiB"))
    p.add_argument("--lossy-runs", type=int, default=20)
    p.add_argument("--cases", default="download,upload,big-download,big-upload,lossy")
    p.add_argument("--work", type=Path, default=None)
    args = p.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", bench.ROOT / "target"))
    bench.MASV = target / "release" / "masv"
    work = args.work or target / "soak"
    bench.build()
    rows = []
    for case in args.cases.split(","):
        print(f"{case} ...", flush=True)
        if case == "lossy":
            rows.append(lossy_case(args, work))
        elif case in ("download", "upload", "big-download", "big-upload"):
            rows.append(kill_case(args, work, case, args.big if case.startswith("big") else 0))
        else:
            die(f"unknown case {case!r}; choose among download,upload,big-download,big-upload,lossy")
        print("  " + ", ".join(f"{k}: {v}" for k, v in rows[-1].items()), flush=True)
    print()
    for row in rows:
        print(" | ".join(f"{k} {v}" for k, v in row.items()))
    if any(r["corrupt"] or r["undeliverable"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
