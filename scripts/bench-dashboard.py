#!/usr/bin/env python3
"""What an open dashboard costs a transfer: a download through the agent with the dashboard
closed, and with it open in a headless chromium (its live stream connected), side by side.

    flock /tmp/masv-bench.lock python3 scripts/bench-dashboard.py [--size 1GiB] [--rounds 3]

One hub (release build) holds one file of --size, uploaded once. Each round, for each case in
alternating order, a fresh agent downloads it (checked by SHA-256); for "open", chromium shows
the agent's dashboard (transfers view) from before the download starts until it ends, and the
run is refused unless the page holds a connection to the agent. Printed: the median time, CPU
and peak RSS of the agent per case, and the ratio open / closed (the issue's target: no
measurable cost).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench import API_KEY, TEAM_ID, parse_size  # noqa: E402


def connections_to(port):
    """Established TCP connections to 127.0.0.1:port (from /proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "01" and int(local.split(":")[1], 16) == port:
                n += 1
    return n


class Dashboard:
    """Headless chromium showing the agent's dashboard."""

    def __init__(self, agent):
        self.profile = tempfile.mkdtemp(prefix="bench-dashboard-")
        self.proc = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", f"http://127.0.0.1:{agent.port}/#transfers"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # The page is up once it holds its stream open (and has fetched its history).
        deadline = time.time() + 30
        while connections_to(agent.port) == 0:
            if self.proc.poll() is not None or time.time() > deadline:
                bench.die("chromium did not open the dashboard (is chromium installed? "
                          "apt-get install chromium)")
            time.sleep(0.1)
        time.sleep(1)

    def close(self):
        bench.stop(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if shutil.which("chromium") is None:
        bench.die("chromium is not installed: apt-get install chromium")
    work = bench.release_work("bench-dashboard")
    hub = bench.Hub(work)
    clip = work / "src" / "clip.mov"
    digest = bench.random_file(clip, args.size)
    cases = ["closed", "open"]
    runs = {c: [] for c in cases}
    try:
        agent = bench.Agent(work, hub, "up")
        _, answer = agent.run("uploads", {"team_id": TEAM_ID, "paths": [str(clip)],
                                          "package_name": "dashboard bench"})
        link = answer["link"]
        for round_ in range(args.rounds):
            for case in cases if round_ % 2 == 0 else list(reversed(cases)):
                agent = bench.Agent(work, hub, f"{case}-{round_}")
                page = Dashboard(agent) if case == "open" else None
                dst = work / f"dst-{case}-{round_}"
                try:
                    if page and connections_to(agent.port) == 0:
                        bench.die("the dashboard is not connected to the agent")
                    run, _ = agent.run("downloads", {"url": link, "dst_folder": str(dst)})
                finally:
                    if page:
                        page.close()
                got = next(p for p in dst.rglob("clip.mov"))
                if bench.sha256(got) != digest:
                    bench.die(f"the download with the dashboard {case} differs")
                shutil.rmtree(dst)
                runs[case].append(run)
                print(f"  round {round_ + 1} dashboard {case:6}: {run['s']:.2f} s, "
                      f"agent CPU {run['cpu']:.2f} s", flush=True)
    finally:
        hub.close()
    print(f"\n{args.size / (1 << 20):.0f} MiB download, {args.rounds} rounds, medians; load "
          f"{os.getloadavg()[0]:.2f} at the end\n")
    print("| dashboard | time | MiB/s | agent CPU | agent peak RSS | time vs closed |")
    print("|---|---|---|---|---|---|")
    closed = statistics.median(r["s"] for r in runs["closed"])
    for case in cases:
        print(f"| {case} | {bench.agent_cells(runs[case], args.size, closed)} |")


if __name__ == "__main__":
    main()
