"""First-request latency of one-off deletion requests, with JAX's persistent compilation cache
cold (empty) and warm (filled by an earlier process), in fresh processes.

    python benchmarks/latency.py          # writes benchmarks/results/latency.{json,md}

Requests (each a fresh ``python -m jaxunlearn.cli ...`` process, as an operator runs them):
- ``forget --method ssd`` and ``forget --method gradient_difference`` on a digits MLP checkpoint
  written by ``jaxunlearn train`` (the audited command);
- ``sisa forget`` on a digits SISA directory (4 shards x 2 slices, sequential).

For each: a cold run (empty cache directory), a warm run forgetting *the same number* of other
ids, and a warm run forgetting a *different number* (deletion requests come in every size).
Reported: the request's own seconds (the method, compilation included: the audit record's
``seconds``; for SISA the forget's own timing) and the process's wall time (Python and JAX
start-up included). Median of ``--reps`` repetitions, each from a new empty cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402


def _cli(args: list[str], cache: str) -> tuple[float, str]:
  env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "JAXUNLEARN_COMPILE_CACHE": cache}
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "jaxunlearn.cli", *args], env=env, capture_output=True, text=True,
                        timeout=900)
  wall = time.perf_counter() - t0
  if proc.returncode != 0:
    raise RuntimeError(f"{args} failed: {proc.stderr[-2000:]}")
  return wall, proc.stdout


def _request_seconds(job: str, out_dir: str, stdout: str) -> float:
  if job == "sisa":
    m = re.search(r"in ([0-9.]+) s \(request", stdout.replace("\n", " "))
    return float(m.group(1))
  with open(os.path.join(out_dir, "forget-ledger.jsonl")) as f:
    return json.loads(f.read().splitlines()[-1])["seconds"]


_FLOOR = """
import sys
from jaxunlearn._src import sisa_cli
job, _ = sisa_cli._open(sys.argv[1])
job.forget([int(i) for i in sys.argv[2].split(",")])          # compiles everything
print(job.forget([int(i) for i in sys.argv[3].split(",")]).seconds)   # nothing left to compile
"""


def _sisa_floor(directory: str, first: list[int], second: list[int]) -> float:
  """The second request's seconds in a process that already ran one: the work itself, with no
  compilation and no cache to read (the floor a warm fresh process can approach)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run([sys.executable, "-c", _FLOOR, directory, ",".join(map(str, first)), ",".join(map(str, second))],
                        env=env, capture_output=True, text=True, timeout=900, check=True)
  return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--reps", type=int, default=3)
  args = ap.parse_args()
  work = tempfile.mkdtemp(prefix="latency-")
  ckpt = os.path.join(work, "model")
  _cli(["train", "--out", ckpt, "--epochs", "5"], "off")
  sisa_base = os.path.join(work, "sisa")
  _cli(["sisa", "train", "--dir", sisa_base, "--shards", "4", "--slices", "2", "--epochs", "4",
        "--strategy", "sequential"], "off")
  requests = {"first": list(range(100, 132)), "same size": list(range(300, 332)), "other size": list(range(500, 547))}
  rows = {}
  for job in ("ssd", "gradient_difference", "sisa"):
    runs = {k: [] for k in requests}
    for rep in range(args.reps):
      cache = os.path.join(work, f"cache-{job}-{rep}")
      shutil.rmtree(cache, ignore_errors=True)
      os.makedirs(cache)
      if job == "sisa":
        d = os.path.join(work, f"sisa-{rep}")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(sisa_base, d)
      for name, ids in requests.items():
        if job == "sisa":
          argv, out_dir = ["sisa", "forget", "--dir", d, "--ids", ",".join(map(str, ids))], d
        else:
          out_dir = os.path.join(work, f"out-{job}-{rep}")
          argv = ["forget", "--checkpoint", ckpt, "--out", os.path.join(out_dir, name.replace(" ", "_")),
                  "--method", job, "--ids", ",".join(map(str, ids))]
        wall, stdout = _cli(argv, cache)
        runs[name].append((_request_seconds(job, out_dir, stdout), wall))
        print(job, rep, name, runs[name][-1], flush=True)
    if job == "sisa":
      floors = []
      for rep in range(args.reps):
        d = os.path.join(work, f"sisa-floor-{rep}")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(sisa_base, d)
        floors.append(_sisa_floor(d, requests["first"], requests["same size"]))
      sisa_floor = float(np.median(floors))
    rows[job] = {name: {"request_s": float(np.median([r[0] for r in v])), "wall_s": float(np.median([r[1] for r in v])),
                        "ids": len(requests[name])} for name, v in runs.items()}
  shutil.rmtree(work, ignore_errors=True)
  m = _common.machine()
  lines = ["# First-request latency, compilation cache cold and warm (`benchmarks/latency.py`)", "",
           _common.machine_line(m), "",
           f"Fresh process per request; median of {args.reps} repetitions, each from an empty cache directory. "
           "Request: the method's own seconds, compilation included (wall: the whole process, Python and JAX "
           "start-up included). Target (issue 17): a warm request <= 30 % of the cold one, also for another "
           "number of ids.", "",
           "| request | cold: 32 ids | warm: 32 other ids | warm / cold | warm: 47 ids | warm / cold | "
           "process wall cold / warm / warm other size |", "|---|---|---|---|---|---|---|"]
  label = {"ssd": "`forget --method ssd`", "gradient_difference": "`forget --method gradient_difference`",
           "sisa": "`sisa forget` (4 shards x 2 slices)"}
  for job, r in rows.items():
    cold, same, other = r["first"], r["same size"], r["other size"]
    lines.append(f"| {label[job]} | {cold['request_s']:.2f} s | {same['request_s']:.2f} s | "
                 f"{same['request_s'] / cold['request_s']:.0%} | {other['request_s']:.2f} s | "
                 f"{other['request_s'] / cold['request_s']:.0%} | {cold['wall_s']:.1f} / {same['wall_s']:.1f} / "
                 f"{other['wall_s']:.1f} s |")
  lines += ["", f"`sisa forget`'s request is the retraining itself: these 32 (or 47) random ids fall in every shard's "
            f"first slice, so every shard retrains from scratch (8 orbax "
            f"checkpoints written). The same request in a process that has already run one (nothing to compile, no "
            f"cache to read) takes {sisa_floor:.2f} s, {sisa_floor / rows['sisa']['first']['request_s']:.0%} of the "
            "cold request: the floor a warm request can approach. The warm request in a fresh process costs "
            f"{rows['sisa']['same size']['request_s'] - sisa_floor:.2f} s more than that floor (tracing, the "
            "models' initialisation op by op, reading the compiled programs from the cache).", ""]
  _common.write("latency", {"machine": m, "rows": rows, "reps": args.reps, "sisa_in_process_floor_s": sisa_floor},
                "\n".join(lines))


if __name__ == "__main__":
  main()
