"""Shared helpers of the benchmark scripts: machine description, result files, timing."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time

import jax

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def machine() -> dict:
  devices = jax.devices()
  return {
      "date": datetime.date.today().isoformat(),
      "platform": platform.platform(),
      "cpu_count": os.cpu_count(),
      "backend": jax.default_backend(),
      "device": devices[0].device_kind,
      "device_count": len(devices),
      "jax": jax.__version__,
      "python": platform.python_version(),
  }


def machine_line(m: dict) -> str:
  return (f"Machine: {m['device']} x{m['device_count']} ({m['backend']}), {m['cpu_count']} CPU cores, "
          f"{m['platform']}, jax {m['jax']}, Python {m['python']}, {m['date']}.")


def write(name: str, payload: dict, markdown: str) -> None:
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
    json.dump(payload, f, indent=1)
  with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
    f.write(markdown)
  print(markdown)


def median_time(fn, reps: int) -> float:
  """Median wall time of ``reps`` calls of ``fn`` (which must block on its result)."""
  return interleaved({"fn": fn}, reps, warm_up=False)["fn"]


def interleaved(jobs: dict, reps: int, *, warm_up: bool = True) -> dict:
  """Median wall time of each job over ``reps`` rounds in which every job runs once, in a fixed
  order (A B C ... A B C ...), after one warm-up call of each (compilation). Jobs must block on
  their results."""
  if warm_up:
    for fn in jobs.values():
      fn()
  times = {k: [] for k in jobs}
  for _ in range(reps):
    for k, fn in jobs.items():
      t0 = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t0)
  return {k: statistics.median(v) for k, v in times.items()}
