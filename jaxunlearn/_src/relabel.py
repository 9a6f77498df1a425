r"""Random labelling and its saliency-masked form (SalUn), with the pieces they are built from:
``random_labels`` (a wrong label per example), ``freeze_entries`` (an optax transformation that
holds chosen entries of the parameters fixed) and ``saliency_mask``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import training
from jaxunlearn._src.base import LossFn, Params
from jaxunlearn._src.recipes import Data, cached_optimizer, epochs_of, required, run_steps, union
from jaxunlearn._src.reset import global_rank


def random_labels(y: np.ndarray, ids: np.ndarray, num_classes: int, *, seed: int) -> np.ndarray:
  r"""A random wrong label per example: :math:`y' = (y + 1 + u) \bmod C`, :math:`u` uniform in
  :math:`\{0, \dots, C-2\}`, drawn from the example's id and ``seed`` alone (the same example
  gets the same label whatever the order or the rest of the set).

  Example:
    >>> import numpy as np
    >>> import jaxunlearn
    >>> y = np.array([0, 1, 2, 3])
    >>> bool(np.all(jaxunlearn.random_labels(y, np.arange(4), 4, seed=0) != y))
    True
  """
  if num_classes < 2:
    raise ValueError(f"random labels need at least 2 classes, got {num_classes}.")
  salt = data_lib.mix64(np.array([seed], np.uint64) ^ np.uint64(0x5A17))
  u = data_lib.mix64(np.asarray(ids, np.int64).astype(np.uint64) ^ salt) % np.uint64(num_classes - 1)
  return ((np.asarray(y, np.int64) + 1 + u.astype(np.int64)) % num_classes).astype(np.asarray(y).dtype)


def relabelled(ds: data_lib.Dataset, *, seed: int) -> data_lib.Dataset:
  """``ds`` with every label replaced by ``random_labels``."""
  return dataclasses.replace(ds, y=random_labels(ds.y, ds.ids, ds.num_classes, seed=seed))


class FreezeState(NamedTuple):
  """State holding the 0/1 ``trainable`` pytree of ``freeze_entries``."""

  trainable: Params


def freeze_entries(trainable: Params | None = None) -> optax.GradientTransformation:
  r"""Zeroes the updates of the parameter entries where ``trainable`` is 0:
  :math:`u \leftarrow u \odot m`.

  Placed before an optimizer (``chain(freeze_entries(m), optax.adam(lr))``) the frozen entries
  receive zero gradients, so Adam's moments stay zero there and their updates are exactly 0;
  placed after it as well, nothing the optimizer adds (weight decay) moves them. Frozen entries
  keep their values bit for bit.

  The mask lives in the state (``FreezeState``), so one transformation (and one compiled step)
  serves every mask: ``trainable=None`` starts with every entry trainable, and a state built
  as ``FreezeState(mask)`` sets another mask.

  Args:
    trainable: a pytree shaped like the parameters of 0/1 (or boolean) arrays, or ``None``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import jaxunlearn
    >>> params = {"w": jnp.array([1.0, 2.0])}
    >>> tx = optax.chain(jaxunlearn.freeze_entries({"w": jnp.array([1.0, 0.0])}), optax.sgd(0.5))
    >>> updates, _ = tx.update({"w": jnp.array([1.0, 1.0])}, tx.init(params), params)
    >>> updates["w"]
    Array([-0.5, -0. ], dtype=float32)
  """

  def init_fn(params):
    source = params if trainable is None else trainable
    return FreezeState(jax.tree.map(lambda m: jnp.ones(jnp.shape(m), jnp.float32) if trainable is None else
                                    jnp.asarray(m, jnp.float32), source))

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates, state.trainable), state

  return optax.GradientTransformation(init_fn, update_fn)


@functools.lru_cache(maxsize=32)
def masked_optimizer(opt: optax.GradientTransformation) -> optax.GradientTransformation:
  """``chain(freeze_entries(), opt, freeze_entries())``, one object per ``opt``; start it with
  ``masked_state``."""
  return optax.chain(freeze_entries(), opt, freeze_entries())


def masked_state(opt: optax.GradientTransformation, params: Params, trainable: Params):
  """The initial state of ``masked_optimizer(opt)`` with the mask ``trainable``."""
  m = FreezeState(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), trainable))
  return (m, opt.init(params), m)


def fit_masked(loss_fn: LossFn, params: Params, data: data_lib.Dataset, trainable: Params, *, opt, epochs: int,
               batch_size: int, seed: int) -> Params:
  """``training.fit`` with the entries where ``trainable`` is 0 held at their values."""
  tx = masked_optimizer(opt)
  batches = epochs_of(data, batch_size, seed=seed, epochs=epochs)
  params, _ = run_steps(loss_fn, tx, params, masked_state(opt, params, trainable), batches)
  return params


def saliency_mask(loss_fn: LossFn, params: Params, forget: Data, *, fraction: float, batch_size: int = 256) -> Params:
  r"""SalUn's weight saliency mask (Fan et al., ICLR 2024): 1 on the ``fraction`` of parameter
  entries with the largest :math:`|\nabla_\theta \mathcal L_f(\theta)|`, ranked globally over all
  leaves (ties broken by position in leaf order), 0 elsewhere.

  :math:`\mathcal L_f` is the mean loss over the whole forget set (its gradient is accumulated
  batch by batch, weighted by batch size). Returns a pytree of float32 0/1 arrays shaped like
  ``params``.
  """
  if not 0.0 < float(fraction) <= 1.0:
    raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
  forget = required(forget, "forget", "saliency_mask")
  grad = _summed_grad(loss_fn)
  total = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  for batch in data_lib.batches(forget, batch_size, seed=None, shuffle=False):  # padded: one program per size
    total = grad(params, batch, total)
  leaves, treedef = jax.tree_util.tree_flatten(total)
  k = max(1, int(round(float(fraction) * sum(x.size for x in leaves))))
  chosen = global_rank([jnp.abs(x) for x in leaves], k, largest=True)
  return jax.tree_util.tree_unflatten(treedef, [c.astype(jnp.float32) for c in chosen])


def mask_count(mask: Params) -> int:
  """How many entries of a 0/1 mask pytree are 1."""
  return int(sum(float(jnp.sum(m)) for m in jax.tree.leaves(mask)))


@functools.lru_cache(maxsize=32)
def _summed_grad(loss_fn):
  @jax.jit
  def add(params, batch, total):
    n = jnp.sum(batch["mask"])
    g = jax.grad(loss_fn)(params, batch)
    return jax.tree.map(lambda t, x: t + n * x.astype(jnp.float32), total, g)

  return add


def _relabelled_data(forget: Data, retain: Data | None, *, seed: int, with_retain: bool, method: str):
  """The forget set with random wrong labels, with the retain set beside it when ``with_retain``."""
  data = relabelled(required(forget, "forget", method), seed=seed)
  return union(data, required(retain, "retain", method)) if with_retain else data


def random_label(
    loss_fn: LossFn, params: Params, *, forget: Data, retain: Data | None = None, seed: int,
    learning_rate: float = 1e-3, epochs: int = 5, batch_size: int = 128, with_retain: bool = True,
    optimizer: optax.GradientTransformation | None = None,
):
  r"""Random labelling (Golatkar et al., CVPR 2020, as a baseline; Graves et al., AAAI 2021,
  "amnesiac" relabelling): every forget example gets a random wrong label (``random_labels``),
  and the model is fine-tuned with Adam on the relabelled forget set together with the retain set
  (``with_retain``, as SalUn's random-labelling code does), shuffled together:

  .. math:: \min_\theta \; \sum_{(x,y)\in D_f} \ell(\theta; x, y') + \sum_{(x,y)\in D_r} \ell(\theta; x, y)

  The labels are drawn once per example from ``seed`` and its id; the random labels differ from
  the true ones (the papers' code draws over all classes; a label equal to the truth would only
  re-teach the example).
  """
  data = _relabelled_data(forget, retain, seed=seed, with_retain=with_retain, method="random_label")
  opt = optimizer or cached_optimizer("adam", learning_rate)
  return training.fit(loss_fn, params, data, optimizer=opt, epochs=epochs, batch_size=batch_size, seed=seed)


def salun(
    loss_fn: LossFn, params: Params, *, forget: Data, retain: Data | None = None, seed: int,
    fraction: float = 0.5, learning_rate: float = 1e-3, epochs: int = 5, batch_size: int = 128,
    with_retain: bool = True, stats: dict | None = None,
):
  r"""SalUn (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency",
  ICLR 2024): random labelling restricted to the salient weights.

  1. :math:`m = \mathbb 1[\,|\nabla_\theta \mathcal L_f(\theta_0)| \text{ in the top } \gamma\,]`,
     ranked globally (``saliency_mask``, :math:`\gamma` = ``fraction``, 0.5 as in the authors'
     README).
  2. ``random_label`` with the optimizer wrapped in ``masked_optimizer(adam)`` holding :math:`m`: the unmasked
     weights keep their original values exactly, and no optimizer moment builds up for them.

  The authors' code uses SGD with momentum; Adam at ``learning_rate`` is used here, as in the
  other fine-tuning recipes (tuned on digits). ``stats``, if a dict, receives ``"selected"`` and
  ``"parameters"`` (mask size).
  """
  data = _relabelled_data(forget, retain, seed=seed, with_retain=with_retain, method="salun")
  mask = saliency_mask(loss_fn, params, forget, fraction=fraction)
  if stats is not None:
    stats.update(selected=mask_count(mask), parameters=int(sum(m.size for m in jax.tree.leaves(mask))))
  return fit_masked(loss_fn, params, data, mask, opt=cached_optimizer("adam", learning_rate), epochs=epochs,
                    batch_size=batch_size, seed=seed)

