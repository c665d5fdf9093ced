#!/usr/bin/env python3
"""Downloads under storage faults: how much time a 30 % fault ratio costs.

    python3 scripts/bench-faults.py [--files 500] [--file-size 1MiB] [--ratio 0.3] [--rounds 3]

One package of --files files is put on a hub; then the same package is downloaded by fresh
agents (release build) alternately from that hub and from a second hub serving the same data
folder whose storage answers 500 to --ratio of its requests (`masv hub serve
--fault-fail-ratio`). Times run from the POST that starts the download to the moment the agent
records it complete; every run is checked file by file (SHA-256). The table shows the median of
each and their ratio: the issue's target is at most 3x.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench import API_KEY, TEAM_ID, free_port, parse_size, stop, wait_http  # noqa: E402


def hub(work, name, data, ratio):
    """A hub on `data` (shared by both), with `ratio` of storage requests failing."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    seed = folder / "seed.toml"
    seed.write_text(f'[[team]]\nname = "Bench"\nid = "{TEAM_ID}"\napi_keys = ["{API_KEY}"]\n')
    port = free_port()
    log = folder / "hub.log"
    proc = subprocess.Popen(
        [bench.MASV, "hub", "serve", "--data", data, "--listen", f"127.0.0.1:{port}",
         "--seed", seed, "--fault-fail-ratio", str(ratio)],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, name, log)
    h = bench.Hub.__new__(bench.Hub)
    h.dir, h.port, h.url, h.log, h.proc = folder, port, f"http://127.0.0.1:{port}", log, proc
    return h


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=500)
    p.add_argument("--file-size", type=parse_size, default=parse_size("1MiB"))
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    target = Path(bench.os.environ.get("CARGO_TARGET_DIR", bench.ROOT / "target"))
    bench.MASV = target / "release" / "masv"
    bench.build()
    work = target / "bench-faults"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "hub-data"
    clean = hub(work, "clean", data, 0.0)
    faulty = hub(work, "faulty", data, args.ratio)
    src = work / "src" / "package"
    src.mkdir(parents=True)
    manifest = {}
    for i in range(args.files):
        path = src / f"clip {i:04}.bin"
        path.write_bytes(bench.os.urandom(args.file_size))
        manifest[f"package/{path.name}"] = bench.sha256(path)
    link = bench.upload_with_agent(work, clean, src.parent, "faults")
    times = {"clean": [], "faulty": []}
    for round_ in range(args.rounds):
        order = [("clean", clean), ("faulty", faulty)]
        if round_ % 2:
            order.reverse()
        for name, h in order:
            agent = bench.Agent(work, h, f"{name}-{round_}")
            dst = work / f"dst-{name}-{round_}"
            run, _ = agent.run("downloads", {"url": link, "dst_folder": str(dst)})
            bench.verify_tree(dst / "faults", manifest, f"masv ({name})")
            shutil.rmtree(dst)
            times[name].append(run["s"])
            print(f"  {name} round {round_ + 1}: {run['s']:.2f} s", flush=True)
    stop(clean.proc)
    stop(faulty.proc)
    a, b = statistics.median(times["clean"]), statistics.median(times["faulty"])
    print()
    print(f"{args.files} x {args.file_size // 1024} KiB download, storage failing "
          f"{args.ratio:.0%} of requests: median {b:.2f} s against {a:.2f} s fault-free "
          f"= {b / a:.2f}x (target at most 3x)")


if __name__ == "__main__":
    main()
