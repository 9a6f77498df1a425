"""Several processes (JAX's multi-controller runtime): initialisation from the launcher's
environment, global arrays from each process's rows, and the local launcher behind
``jaxunlearn launch``.

On a TPU pod or a GPU cluster, ``jax.distributed.initialize()`` with no arguments finds the
cluster by itself; ``jaxunlearn launch`` is for local runs and tests (N processes on this host,
CPU collectives over gloo).
"""

from __future__ import annotations

import json
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


AUTO = "JAXUNLEARN_DISTRIBUTED"


def initialize_from_env() -> bool:
  """Joins a process group, if the environment describes one; must run before any JAX computation.
  Returns whether it did.

  * ``jaxunlearn launch``'s variables (``JAXUNLEARN_COORDINATOR``, ``..._NUM_PROCESSES``,
    ``..._PROCESS_ID``): local processes, CPU collectives over gloo.
  * ``JAXUNLEARN_DISTRIBUTED=1``: ``jax.distributed.initialize()`` without arguments, which finds
    the cluster by itself (TPU pods, Slurm, Open MPI, Kubernetes JobSets): set it on every host
    to run the ``jaxunlearn`` command line there.
  """
  if jax.distributed.is_initialized():
    return True  # joined already (a script that then runs the command line)
  if COORDINATOR in os.environ:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only; GPU/TPU have their own
    jax.distributed.initialize(coordinator_address=os.environ[COORDINATOR],
                               num_processes=int(os.environ[NUM_PROCESSES]),
                               process_id=int(os.environ[PROCESS_ID]))
    return True
  flag = os.environ.get(AUTO, "").strip().lower()
  if flag in ("", "0", "no", "false", "off"):
    return False
  if flag not in ("1", "yes", "true", "on", "auto"):
    raise ValueError(f"${AUTO} must be 1 (join the cluster jax.distributed finds) or 0, got {os.environ[AUTO]!r}.")
  jax.distributed.initialize()
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


# -- collective helpers for code that runs the same calls in every process (SPMD) ------------------

def multiprocess() -> bool:
  """Whether this process is one of several (``jax.process_count() > 1``)."""
  return jax.process_count() > 1


def is_lead() -> bool:
  """Whether this process is the one that writes shared files (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (no-op in one process)."""
  if multiprocess():
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def allgather_bytes(payload: bytes) -> list[bytes]:
  """Every process's ``payload``, in process order, to every process."""
  if not multiprocess():
    return [payload]
  from jax.experimental import multihost_utils

  lengths = np.asarray(multihost_utils.process_allgather(np.array([len(payload)], np.int32))).reshape(-1)
  buf = np.zeros(max(int(lengths.max()), 1), np.uint8)
  buf[:len(payload)] = np.frombuffer(payload, np.uint8)
  every = np.asarray(multihost_utils.process_allgather(buf))
  return [every[p, :int(n)].tobytes() for p, n in enumerate(lengths)]


# Errors that cross processes keep their type (by name), so that every process raises what the
# lead raised; anything else arrives as a RuntimeError naming the original type.
_PORTABLE_ERRORS: dict[str, type[BaseException]] = {
    e.__name__: e for e in (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, OSError)}


def register_portable_error(error: type[BaseException]) -> type[BaseException]:
  """Lets ``on_lead`` re-raise ``error`` by its own type in the other processes."""
  _PORTABLE_ERRORS[error.__name__] = error
  return error


def on_lead(fn: Callable[[], object]) -> object:
  """Runs ``fn`` in process 0 only and returns its (JSON-serialisable) result in every process; when
  it raises, every process raises the same error (same type and message), so no process is left
  waiting at a later collective. In one process: ``fn()``."""
  if not multiprocess():
    return fn()
  payload, error = b"", None
  if is_lead():
    try:
      payload = json.dumps({"ok": fn()}).encode()
    except Exception as err:  # noqa: BLE001 - re-raised below, after the others have heard of it
      error = err
      payload = json.dumps({"error": [type(err).__name__, str(err)]}).encode()
  message = json.loads(allgather_bytes(payload)[0])
  if error is not None:
    raise error
  if "error" in message:
    name, text = message["error"]
    kind = _PORTABLE_ERRORS.get(name)
    if kind is None:
      raise RuntimeError(f"process 0 failed: {name}: {text}")
    raise kind(text)
  return message["ok"]


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
  """``{name: array}`` as bytes (a JSON header and the raw buffers): bit-exact, any dtype JAX
  knows (bfloat16 included), no pickle."""
  header, chunks, offset = {}, [], 0
  for name, a in arrays.items():
    a = np.array(a, copy=None, order="C")  # (not ascontiguousarray: it makes a 0-d array 1-d)
    header[name] = [a.dtype.name, list(a.shape), offset, a.nbytes]
    chunks.append(a.tobytes())
    offset += a.nbytes
  head = json.dumps(header).encode()
  return len(head).to_bytes(8, "little") + head + b"".join(chunks)


def unpack_arrays(blob: bytes) -> dict[str, np.ndarray]:
  """The inverse of :func:`pack_arrays`."""
  import jax.numpy as jnp

  size = int.from_bytes(blob[:8], "little")
  header = json.loads(blob[8:8 + size])
  body = memoryview(blob)[8 + size:]
  return {name: np.frombuffer(body[off:off + n], jnp.dtype(dtype)).reshape(shape).copy()
          for name, (dtype, shape, off, n) in header.items()}


def allgather_arrays(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
  """Every process's ``{name: array}`` (names and shapes may differ between processes), in
  process order, to every process, bit for bit (:func:`pack_arrays` over :func:`allgather_bytes`)."""
  return [unpack_arrays(blob) for blob in allgather_bytes(pack_arrays(arrays))]


def to_host(tree):
  """A pytree of (possibly multi-process) arrays as NumPy arrays in every process: replicated
  arrays from this process's own copy, sharded ones gathered from every process."""

  def one(v):
    if isinstance(v, jax.Array) and not v.is_fully_addressable:
      if v.is_fully_replicated:
        return np.asarray(v.addressable_data(0))
      from jax.experimental import multihost_utils

      return np.asarray(multihost_utils.process_allgather(v, tiled=True))
    return np.asarray(v)

  return jax.tree.map(one, tree)


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
