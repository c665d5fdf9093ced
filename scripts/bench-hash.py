#!/usr/bin/env python3
"""What the whole-file hash costs: a 2 GiB download and upload through the agent with
`[server] hash = "xxh64"` (the default) and with `hash = "off"`, side by side.

    python3 scripts/bench-hash.py [--size 2GiB] [--rounds 5]

One hub (release build); each round, for each setting in alternating order, a fresh agent
uploads one file of --size and a fresh agent downloads it back (checked by SHA-256). Printed:
the median time, peak RSS and CPU of the agent per setting, and the ratio hashed / not hashed
(the issue's target: within 10 %, memory unchanged).
"""

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench import TEAM_ID, parse_size  # noqa: E402


def agent_with(work, hub, name, hash_format):
    """A fresh agent whose `[server] hash` is `hash_format`."""
    return bench.Agent(work, hub, name, f'[server]\nhash = "{hash_format}"\n')


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=parse_size, default=parse_size("2GiB"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--settings", default="xxh64,off",
                   help="the hash settings to compare, the first against the last (BENCH_PERF=FILE "
                        "profiles each agent, the last run's profile is kept)")
    args = p.parse_args()
    work = bench.release_work("bench-hash")
    hub = None
    clip = work / "src" / "clip.mov"
    digest = bench.random_file(clip, args.size)
    settings = args.settings.split(",")
    runs = {(kind, s): [] for kind in ("upload", "download") for s in settings}
    try:
        for round_ in range(args.rounds):
            for setting in settings if round_ % 2 == 0 else list(reversed(settings)):
                # A fresh hub per run: it keeps what is uploaded (2 GiB a run).
                if hub:
                    hub.close()
                hub = bench.Hub(work)
                agent = agent_with(work, hub, f"up-{setting}-{round_}", setting)
                run, answer = agent.run("uploads", {
                    "team_id": TEAM_ID, "paths": [str(clip)],
                    "package_name": f"{setting}-{round_}"})
                runs[("upload", setting)].append(run)
                dst = work / f"dst-{setting}-{round_}"
                agent = agent_with(work, hub, f"down-{setting}-{round_}", setting)
                down, _ = agent.run("downloads", {"url": answer["link"], "dst_folder": str(dst)})
                got = next(p for p in dst.rglob("clip.mov"))
                if bench.sha256(got) != digest:
                    bench.die(f"the download with hash = {setting} differs")
                shutil.rmtree(dst)
                runs[("download", setting)].append(down)
                print(f"  round {round_ + 1} hash={setting:5}: upload {run['s']:.2f} s, "
                      f"download {down['s']:.2f} s", flush=True)
    finally:
        if hub:
            hub.close()
        shutil.rmtree(work / "hub", ignore_errors=True)
    print(f"\n{args.size / (1 << 20):.0f} MiB, {args.rounds} rounds, medians; load "
          f"{os.getloadavg()[0]:.2f} at the end\n")
    print(f"| case | hash | time | MiB/s | agent CPU | agent peak RSS | time vs {settings[-1]} |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("download", "upload"):
        off = statistics.median(r["s"] for r in runs[(kind, settings[-1])])
        for s in settings:
            print(f"| {kind} | {s} | {bench.agent_cells(runs[(kind, s)], args.size, off)} |")


if __name__ == "__main__":
    main()
