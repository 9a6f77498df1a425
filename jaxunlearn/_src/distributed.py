"""Several processes (JAX's multi-controller runtime): initialisation from the launcher's
environment, global arrays from each process's rows, and the local launcher behind
``jaxunlearn launch``.

On a TPU pod or a GPU cluster, ``jax.distributed.initialize()`` with no arguments finds the
cluster by itself; ``jaxunlearn launch`` is for local runs and tests (N processes on this host,
CPU collectives over gloo).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

COORDINATOR, NUM_PROCESSES, PROCESS_ID = "JAXUNLEARN_COORDINATOR", "JAXUNLEARN_NUM_PROCESSES", "JAXUNLEARN_PROCESS_ID"


def initialize_from_env() -> bool:
  """Joins the process group described by ``jaxunlearn launch``'s environment variables (if set):
  on CPU with gloo collectives. Must run before any JAX computation. Returns whether it did."""
  if COORDINATOR not in os.environ:
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only; GPU/TPU have their own
  jax.distributed.initialize(coordinator_address=os.environ[COORDINATOR],
                             num_processes=int(os.environ[NUM_PROCESSES]),
                             process_id=int(os.environ[PROCESS_ID]))
  return True


def local_rows(n: int) -> slice:
  """The rows ``[start, stop)`` of ``n`` that this process holds when ``n`` rows are split evenly
  over the processes in process order (``n`` must divide evenly)."""
  count, index = jax.process_count(), jax.process_index()
  if n % count:
    raise ValueError(f"{n} rows do not split evenly over {count} processes.")
  per = n // count
  return slice(index * per, (index + 1) * per)


def global_batch(local, mesh: jax.sharding.Mesh, axis: str | Sequence[str] | None = None):
  """Each process's rows of a batch (a pytree of arrays with a leading example axis) as global
  arrays sharded along ``axis`` (default: every axis of ``mesh``) over all processes' devices;
  the global batch is the processes' rows concatenated in process order.

  Example (in each of N processes)::

    rows = ju.distributed.local_rows(len(ds))
    batch = ju.distributed.global_batch({"x": ds.x[rows], "y": ds.y[rows]}, mesh)
    fisher = ju.fisher_diagonal(loss, params, batch, batch_size=64)   # the single-process value
  """
  axis = tuple(mesh.axis_names) if axis is None else axis
  spec = jax.sharding.PartitionSpec(axis if isinstance(axis, str) else tuple(axis))
  sharding = jax.sharding.NamedSharding(mesh, spec)

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * jax.process_count(),) + x.shape[1:])

  return jax.tree.map(one, local)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(processes: int, args: Sequence[str], *, program: Sequence[str] | None = None,
           devices_per_process: int | None = None, timeout: float | None = None,
           echo: Callable[[str], None] = print) -> int:
  """Runs ``program + args`` (default ``python -m jaxunlearn.cli``) in ``processes`` local
  processes joined by a coordinator on 127.0.0.1 (a free port), each line of output prefixed
  by ``[process]``. When one fails, the others are stopped and its exit code returned with its
  last error lines; 0 when all succeed.

  Args:
    processes: how many processes (>= 1).
    args: the command's arguments.
    program: what to run (default: the ``jaxunlearn`` command line of this interpreter).
    devices_per_process: on CPU, simulated devices per process (``XLA_FLAGS``); default: as set.
    timeout: seconds before every process is stopped (exit code 124).
    echo: where the prefixed lines go.
  """
  if processes < 1:
    raise ValueError(f"--processes must be >= 1, got {processes}.")
  program = list(program) if program is not None else [sys.executable, "-m", "jaxunlearn.cli"]
  port = _free_port()
  base = dict(os.environ)
  if devices_per_process is not None:
    flags = [f for f in base.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    base["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices_per_process}"])
  procs, tails, lock = [], [[] for _ in range(processes)], threading.Lock()

  def pump(k, stream, keep):
    for line in stream:
      line = line.rstrip("\n")
      with lock:
        echo(f"[{k}] {line}")
      if keep:
        tails[k] = (tails[k] + [line])[-20:]

  threads = []
  for k in range(processes):
    env = {**base, COORDINATOR: f"127.0.0.1:{port}", NUM_PROCESSES: str(processes), PROCESS_ID: str(k)}
    p = subprocess.Popen([*program, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    for stream, keep in ((p.stdout, False), (p.stderr, True)):
      t = threading.Thread(target=pump, args=(k, stream, keep), daemon=True)
      t.start()
      threads.append(t)
  start, failed = time.monotonic(), None
  while failed is None and any(p.poll() is None for p in procs):
    failed = next((k for k, p in enumerate(procs) if p.poll() not in (None, 0)), None)
    if timeout is not None and time.monotonic() - start > timeout:
      failed = -1
      break
    time.sleep(0.05)
  if failed is None:
    failed = next((k for k, p in enumerate(procs) if p.returncode != 0), None)
  if failed is not None:
    for p in procs:
      if p.poll() is None:
        p.terminate()
    for p in procs:
      try:
        p.wait(timeout=10)
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
  for t in threads:
    t.join(timeout=5)
  for p in procs:
    p.stdout.close()
    p.stderr.close()
  if failed is None:
    return 0
  if failed == -1:
    echo(f"jaxunlearn launch: stopped after {timeout:g} s (timeout); every process was terminated.")
    return 124
  code = procs[failed].returncode
  last = "\n".join(tails[failed][-5:])
  echo(f"jaxunlearn launch: process {failed} failed (exit code {code}); the others were stopped. Its last error "
       f"lines:\n{last}")
  return code or 1
