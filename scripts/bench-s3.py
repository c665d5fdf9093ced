#!/usr/bin/env python3
"""The hub on S3 storage against the hub on its own disk: a 2 GiB upload and download through
the agent, and the CPU the hub spends per GiB.

    python3 scripts/bench-s3.py [--size 2GiB] [--rounds 3]

Needs `s3s-fs` (cargo install --locked s3s-fs --version 0.14.1 --features binary), the S3
server the tests use. Two hubs (release build) serve the same team: one keeps files on its
disk, the other on s3s-fs over the same disk (`--storage s3://bench`). Each round, a fresh
agent uploads one file of --size to each hub, then a fresh agent downloads it back (checked by
SHA-256); the order of the two hubs alternates. Printed per case: the median time, and the
CPU seconds per GiB of the hub and of the object store (the store's is the hub's own on disk).
With S3 storage no byte passes through the hub: its CPU per GiB should be near zero.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench import API_KEY, TEAM_ID, cpu_of, free_port, parse_size, stop, wait_http  # noqa: E402

S3_KEY, S3_SECRET = "benchkey", "benchsecret0123456789"


def s3_server(work):
    root = work / "s3"
    (root / "bench").mkdir(parents=True)
    port = free_port()
    exe = shutil.which("s3s-fs") or bench.die("s3s-fs is needed: cargo install --locked "
                                              "s3s-fs --version 0.14.1 --features binary")
    proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--access-key",
                             S3_KEY, "--secret-key", S3_SECRET, root],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                bench.die("s3s-fs did not start")
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


def hub(work, name, storage):
    h = bench.Hub.__new__(bench.Hub)
    h.dir = work / name
    h.dir.mkdir(parents=True)
    seed = h.dir / "seed.toml"
    seed.write_text(f'[[team]]\nname = "Bench"\nid = "{TEAM_ID}"\napi_keys = ["{API_KEY}"]\n')
    h.port = free_port()
    h.url = f"http://127.0.0.1:{h.port}"
    h.log = h.dir / "hub.log"
    args = [bench.MASV, "hub", "serve", "--data", h.dir / "data", "--listen",
            f"127.0.0.1:{h.port}", "--seed", seed]
    env = dict(os.environ)
    if storage:
        args += ["--storage", "s3://bench/hub", "--s3-endpoint", storage, "--s3-path-style"]
        env.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    h.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(h.log, "w"), env=env)
    wait_http(f"{h.url}/healthz", h.proc, f"the {name} hub", h.log)
    return h


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=parse_size, default=parse_size("2GiB"))
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", bench.ROOT / "target"))
    bench.MASV = target / "release" / "masv"
    bench.build()
    work = target / "bench-s3"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store, endpoint = s3_server(work)
    hubs = {"disk": hub(work, "hub-disk", None), "s3": hub(work, "hub-s3", endpoint)}
    src = work / "src"
    src.mkdir()
    clip = src / "clip.mov"
    with open(clip, "wb") as f:
        left = args.size
        while left:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n
    digest = bench.sha256(clip)
    gib = args.size / (1 << 30)
    results = {(kind, name): [] for kind in ("upload", "download") for name in hubs}
    try:
        for round_ in range(args.rounds):
            order = list(hubs.items()) if round_ % 2 == 0 else list(reversed(hubs.items()))
            for name, h in order:
                # The store's CPU is the hub's own when the hub keeps files on its disk.
                stored_by = store if name == "s3" else h.proc
                for kind in ("upload", "download"):
                    agent = bench.Agent(work, h, f"{name}-{kind}-{round_}")
                    hub_cpu, store_cpu = cpu_of(h.proc.pid), cpu_of(stored_by.pid)
                    if kind == "upload":
                        run, answer = agent.run("uploads", {
                            "team_id": TEAM_ID, "paths": [str(clip)],
                            "package_name": f"{name}-{round_}"})
                        link = answer["link"]
                    else:
                        dst = work / f"dst-{name}-{round_}"
                        run, _ = agent.run("downloads", {"url": link, "dst_folder": str(dst)})
                        got = next(p for p in dst.rglob("clip.mov"))
                        if bench.sha256(got) != digest:
                            bench.die(f"the download from the {name} hub differs")
                        shutil.rmtree(dst)
                    hub_s = cpu_of(h.proc.pid) - hub_cpu
                    store_s = cpu_of(stored_by.pid) - store_cpu
                    if name == "disk":
                        store_s = hub_s
                    results[(kind, name)].append((run["s"], hub_s / gib, store_s / gib))
                    print(f"  round {round_ + 1} {kind:8} {name:4}: {run['s']:.2f} s, hub "
                          f"{hub_s:.2f} CPU-s, store {store_s:.2f} CPU-s", flush=True)
    finally:
        for h in hubs.values():
            h.close()
        stop(store)
    print(f"\n{args.size / (1 << 20):.0f} MiB, {args.rounds} rounds, medians; load "
          f"{os.getloadavg()[0]:.2f} at the end\n")
    print("| case | storage | time | MiB/s | hub CPU-s/GiB | store CPU-s/GiB |")
    print("|---|---|---|---|---|---|")
    for (kind, name), runs in results.items():
        t = statistics.median(r[0] for r in runs)
        hub_c = statistics.median(r[1] for r in runs)
        store_c = statistics.median(r[2] for r in runs)
        print(f"| {kind} | {name} | {t:.2f} s | {args.size / (1 << 20) / t:.0f} | {hub_c:.2f} "
              f"| {store_c:.2f} |")


if __name__ == "__main__":
    main()
