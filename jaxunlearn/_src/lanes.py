"""Training many models at once: a stacked "lane" axis, one compiled program for all of them.

A *lane* is one model (a SISA shard, or one of the N seeds of the NeurIPS score). Its parameters
and optimizer state are stacked along a leading axis. A :class:`Schedule` says, for every step and
lane, which rows of a device-resident data table form the batch (``idx``), which of those rows are
real (``mask``) and whether the lane takes the step at all (``active``). An inactive lane keeps its
parameters and optimizer state bit for bit (``jnp.where`` selects, it does not compute), so lanes
with different step counts share one program and never influence each other.

Two strategies run a schedule:

* ``"vmap"``: one jitted ``vmap`` of the step over all lanes; when the lane count is a multiple of
  the (process-local) device count the lane axis is sharded over the devices.
* ``"sequential"``: the same step, jitted without ``vmap``, lane after lane (inactive steps skipped).

The two give (slightly) different floating-point results, so a model must always be retrained with
the strategy and lane count it was first trained with; within one strategy a lane's result depends
on its own schedule only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src.base import LossFn, Params

STRATEGIES = ("vmap", "sequential")
_BLOCK_EVERY = 16  # block on results at least this often (forced CPU devices abort on long queues)


class Schedule(NamedTuple):
  """Row indices ``idx [T, M, B]``, real-row ``mask [T, M, B]`` and ``active [T, M]`` per step.

  ``idx`` and ``mask`` may instead be dicts of such arrays (several named batches per step, e.g.
  ``{"forget": ..., "retain": ...}``); the loss then receives a dict of batches.
  """

  idx: Any
  mask: Any
  active: np.ndarray

  @property
  def steps(self) -> int:
    return int(self.active.shape[0])

  @property
  def lanes(self) -> int:
    return int(self.active.shape[1])


def epoch_rows(
    positions: np.ndarray, ids: np.ndarray, *, batch_size: int, seed: int, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
  """One epoch of batches over the table rows ``positions`` whose example ids are ``ids``.

  The order is ``data.id_order(ids, seed, epoch)`` (ids and seed only), the last batch is padded
  with row 0 and mask 0. Returns ``(idx [b, batch_size] int32, mask [b, batch_size] float32)``.
  """
  n = len(positions)
  if n == 0:
    return np.zeros((0, batch_size), np.int32), np.zeros((0, batch_size), np.float32)
  order = np.asarray(positions)[data_lib.id_order(ids, seed=seed, epoch=epoch)]
  b = data_lib.num_batches(n, batch_size)
  idx = np.zeros(b * batch_size, np.int32)
  mask = np.zeros(b * batch_size, np.float32)
  idx[:n] = order
  mask[:n] = 1.0
  return idx.reshape(b, batch_size), mask.reshape(b, batch_size)


def stack_lanes(per_lane: Sequence[tuple[np.ndarray, np.ndarray]], batch_size: int) -> Schedule:
  """Stacks per-lane ``(idx [T_m, B], mask [T_m, B])`` into a :class:`Schedule` of ``max T_m``
  steps; a lane with fewer steps is inactive (and padded) at the end."""
  steps = max((len(i) for i, _ in per_lane), default=0)
  m = len(per_lane)
  idx = np.zeros((steps, m, batch_size), np.int32)
  mask = np.zeros((steps, m, batch_size), np.float32)
  active = np.zeros((steps, m), bool)
  for lane, (i, k) in enumerate(per_lane):
    idx[:len(i), lane] = i
    mask[:len(i), lane] = k
    active[:len(i), lane] = True
  return Schedule(idx, mask, active)


def epochs_schedule(
    ds: data_lib.Dataset, *, lanes: int, epochs: int, batch_size: int, seeds: Sequence[int]
) -> Schedule:
  """Every lane makes ``epochs`` passes over all of ``ds`` (table rows ``0..len(ds)-1``), lane
  ``m`` shuffled with ``seeds[m]``."""
  if len(seeds) != lanes:
    raise ValueError(f"need one seed per lane: {lanes} lanes, {len(seeds)} seeds.")
  positions = np.arange(len(ds))
  empty = (np.zeros((0, batch_size), np.int32), np.zeros((0, batch_size), np.float32))
  per_lane = []
  for m in range(lanes):
    parts = [empty] + [epoch_rows(positions, ds.ids, batch_size=batch_size, seed=int(seeds[m]), epoch=e)
                       for e in range(epochs)]
    per_lane.append((np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))
  return stack_lanes(per_lane, batch_size)


def table(ds: data_lib.Dataset) -> dict[str, jax.Array]:
  """The device-resident data table ``{"x", "y", "ids"}`` that schedules index into."""
  return {k: jnp.asarray(v) for k, v in ds.as_batch().items()}


def _gather(tbl, idx, mask):
  if isinstance(idx, dict):
    # One shared table ({"x", ...}) for every named batch, or one table per name.
    return {k: _gather(tbl if "x" in tbl else tbl[k], idx[k], mask[k]) for k in idx}
  batch = {k: v[idx] for k, v in tbl.items()}
  batch["mask"] = mask
  return batch


@functools.lru_cache(maxsize=64)
def _steps(loss_fn: LossFn, optimizer: optax.GradientTransformation):
  def step(params, opt_state, tbl, idx, mask, active):
    grads = jax.grad(loss_fn)(params, _gather(tbl, idx, mask))
    updates, new_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
    return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state)

  return jax.jit(jax.vmap(step, in_axes=(0, 0, None, 0, 0, 0))), jax.jit(step)


def _lane_sharding(lanes: int):
  # This process's devices: across processes, each runs its own lanes (``score``).
  devices = jax.local_devices()
  if len(devices) > 1 and lanes % len(devices) == 0:
    mesh = jax.sharding.Mesh(np.array(devices), ("lanes",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("lanes"))
  return None


def init_states(optimizer: optax.GradientTransformation, params: Params) -> Any:
  """Stacked optimizer states for stacked ``params``."""
  return jax.vmap(optimizer.init)(params)


def run(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    params: Params,
    opt_state: Any,
    tbl: Any,
    schedule: Schedule,
    *,
    strategy: str = "vmap",
) -> tuple[Params, Any]:
  """Runs ``schedule`` on the stacked ``params``/``opt_state``; returns the new stacked pair.

  Args:
    loss_fn: ``loss(params, batch)`` for one model (``batch`` as in ``jaxunlearn.training.fit``).
    optimizer: any optax transformation; must be the same object for every call that should share
      a compiled step.
    params: parameters with a leading lane axis ``M``.
    opt_state: ``init_states(optimizer, params)`` or a restored one.
    tbl: ``table(ds)`` (or a dict of tables matching a dict schedule).
    schedule: what each lane does at each step.
    strategy: ``"vmap"`` or ``"sequential"`` (see the module docstring).
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}.")
  lanes = jax.tree.leaves(params)[0].shape[0]
  if schedule.lanes != lanes:
    raise ValueError(f"schedule has {schedule.lanes} lanes but params have {lanes}.")
  vstep, step = _steps(loss_fn, optimizer)
  if strategy == "vmap":
    sharding = _lane_sharding(lanes)
    if sharding is not None:
      params, opt_state = jax.device_put((params, opt_state), sharding)
    for t in range(schedule.steps):
      idx = jax.tree.map(lambda a: a[t], schedule.idx)
      mask = jax.tree.map(lambda a: a[t], schedule.mask)
      params, opt_state = vstep(params, opt_state, tbl, idx, mask, schedule.active[t])
      if t % _BLOCK_EVERY == _BLOCK_EVERY - 1:
        jax.block_until_ready(params)
    return params, opt_state
  out_p, out_s = [], []
  for m in range(lanes):
    p = jax.tree.map(lambda a: a[m], params)
    s = jax.tree.map(lambda a: a[m], opt_state)
    for t in np.flatnonzero(schedule.active[:, m]):
      idx = jax.tree.map(lambda a: a[t, m], schedule.idx)
      mask = jax.tree.map(lambda a: a[t, m], schedule.mask)
      p, s = step(p, s, tbl, idx, mask, np.True_)
    out_p.append(p)
    out_s.append(s)
  stack = lambda *xs: jnp.stack(xs)  # noqa: E731
  return jax.tree.map(stack, *out_p), jax.tree.map(stack, *out_s)


def init_many(init_fn, key, salts) -> Params:
  """Stacked ``init_fn(fold_in(key, s))`` for each ``s`` in ``salts``, in one traced ``vmap``
  (bit-identical to calling ``init_fn`` per key, and much faster for Flax modules)."""
  salts = jnp.asarray(list(salts), jnp.uint32)
  return jax.vmap(lambda s: init_fn(jax.random.fold_in(key, s)))(salts)


def stack(trees: Sequence[Params]) -> Params:
  """Stacks same-structured pytrees along a new leading lane axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Params, lane: int) -> Params:
  """Lane ``lane`` of a stacked pytree."""
  return jax.tree.map(lambda a: a[lane], tree)


def predict_stacked(apply_fn, params: Params, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
  """Logits ``[M, n, C]`` of every lane on ``x`` (float32 NumPy)."""
  fn = _vapply(apply_fn)
  out = []
  for start in range(0, len(x), batch_size):
    out.append(np.asarray(fn(params, jnp.asarray(x[start:start + batch_size])), np.float32))
  return np.concatenate(out, axis=1)


@functools.lru_cache(maxsize=32)
def _vapply(apply_fn):
  return jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))
