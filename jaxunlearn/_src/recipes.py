r"""Complete unlearning procedures with one signature, built from the library's transforms.

Every recipe is ``recipe(loss_fn, params, *, forget, retain, seed, **hyper) -> params``:

* ``loss_fn(params, batch) -> scalar``: the mean loss of a batch honouring ``batch["mask"]`` (the
  builders in ``jaxunlearn.losses`` do); with ``state=``, ``loss(params, batch, state) -> (loss,
  new_state)`` for models with non-parameter state (batch-norm statistics, an NNX model's
  non-``Param`` state), and the recipe returns ``(params, state)``.
* ``forget`` / ``retain``: a ``jaxunlearn.data.Dataset`` or a dict of arrays with ``"x"`` and
  ``"y"`` (and ``"ids"``; without them the row numbers serve as ids).
* ``seed``: the shuffling seed (required: nothing defaults to seed 0).
* ``**hyper``: the method's hyper-parameters. Their defaults are written once, in these
  signatures; the method registry (``jaxunlearn.methods``) reads them from here.

Optimizers are built from ``learning_rate`` once per value and reused, so that calling a recipe
again reuses its compiled steps (they are cached by the optimizer's identity); pass
``optimizer=`` to use your own instead.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import jax
import numpy as np
import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import training
from jaxunlearn._src.ascent import gradient_ascent as _gradient_ascent_tx
from jaxunlearn._src.ascent import gradient_difference as _gradient_difference_tx
from jaxunlearn._src.base import LossFn, Mask, Params, PRNGKey
from jaxunlearn._src.importance import bucketed, fisher_diagonal
from jaxunlearn._src.microbatch import batch_grad, check_micro_batch
from jaxunlearn._src.reset import reset_params
from jaxunlearn._src.ssd import ssd_dampen, ssd_selection

Data = Any  # a Dataset, or a dict of arrays {"x", "y"[, "ids"]}


@functools.lru_cache(maxsize=64)
def cached_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
  """``optax.<name>(learning_rate)``, one object per value (so compiled steps are reused)."""
  return getattr(optax, name)(learning_rate)


def as_dataset(data: Data, *, name: str) -> data_lib.Dataset:
  """A ``Dataset`` from a ``Dataset`` or a dict of arrays ``{"x", "y"[, "ids"]}``."""
  if isinstance(data, data_lib.Dataset):
    return data
  if not hasattr(data, "keys") or "x" not in data or "y" not in data:
    raise TypeError(f"{name} must be a jaxunlearn.data.Dataset or a dict with 'x' and 'y' arrays, got "
                    f"{type(data).__name__}.")
  x, y = np.asarray(data["x"]), np.asarray(data["y"])
  ids = np.asarray(data["ids"]) if "ids" in data else np.arange(len(x), dtype=np.int64)
  num_classes = int(y.max()) + 1 if y.size else 1
  return data_lib.Dataset(x=x, y=y, ids=data_lib.as_ids(ids), num_classes=num_classes, name=name)


def cycled(ds: data_lib.Dataset, batch_size: int, *, seed: int):
  """Endless batches of ``ds``, epoch after epoch, each of ``batch_size`` rows: a set smaller than
  that is one batch padded with a zero mask, so that forget sets of every size below
  ``batch_size`` share one compiled step (deletion requests come in every size)."""
  return itertools.chain.from_iterable(data_lib.batches(ds, batch_size, seed=seed, epoch=e) for e in itertools.count())


def epochs_of(ds: data_lib.Dataset, batch_size: int, *, seed: int, epochs: int):
  """The batches of ``epochs`` passes over ``ds``, as ``training.fit`` takes them."""
  return (b for e in range(epochs) for b in data_lib.batches(ds, batch_size, seed=seed, epoch=e))


def run_steps(loss_fn: LossFn, optimizer: optax.GradientTransformation, params: Params, opt_state: Any, batches):
  """Takes one optimizer step of ``loss_fn`` per batch (a batch may be any pytree the loss reads,
  e.g. ``{"forget": ..., "retain": ...}``), through ``training.compiled_step``: the same
  ``loss_fn`` and ``optimizer`` objects reuse one compiled step. Returns ``(params, opt_state)``."""
  step = training.compiled_step(loss_fn, optimizer)
  for batch in batches:
    params, opt_state, _ = step(params, opt_state, batch)
  return params, opt_state


def paired(main: data_lib.Dataset, other: data_lib.Dataset, batch_size: int, *, seed: int, epochs: int,
           main_key: str, other_key: str):
  """``epochs`` passes over ``main``, each batch paired with the next batch of ``other`` (cycled,
  shuffled with ``seed + 1``): ``{main_key: ..., other_key: ...}`` batches."""
  others = cycled(other, batch_size, seed=seed + 1)
  for epoch in range(epochs):
    for batch in data_lib.batches(main, batch_size, seed=seed, epoch=epoch):
      yield {main_key: batch, other_key: next(others)}


def required(data: Data | None, name: str, method: str) -> data_lib.Dataset:
  if data is None:
    raise ValueError(f"{method} needs {name}=.")
  ds = as_dataset(data, name=name)
  if len(ds) == 0:
    raise ValueError(f"{method}: the {name} set is empty.")
  return ds


def finetune(
    loss_fn: LossFn, params: Params, *, forget: Data | None = None, retain: Data, seed: int,
    learning_rate: float = 1e-3, epochs: int = 3, batch_size: int = 128,
    optimizer: optax.GradientTransformation | None = None, state: Any = None,
):
  """Fine-tunes on the retain set alone with Adam: the "catastrophic forgetting" baseline.

  ``forget`` is not used (accepted for the common signature).
  """
  del forget
  retain = required(retain, "retain", "finetune")
  opt = optimizer or cached_optimizer("adam", learning_rate)
  return training.fit(loss_fn, params, retain, optimizer=opt, epochs=epochs, batch_size=batch_size, seed=seed,
                      state=state)


@functools.lru_cache(maxsize=32)
def _ascent_chain(opt) -> optax.GradientTransformationExtraArgs:
  # Cached so that the same optimizer gives the same chain object, hence one compiled step.
  return optax.chain(_gradient_ascent_tx(), opt)


def gradient_ascent(
    loss_fn: LossFn, params: Params, *, forget: Data, retain: Data | None = None, seed: int,
    learning_rate: float = 2e-2, epochs: int = 1, batch_size: int = 32,
    optimizer: optax.GradientTransformation | None = None, state: Any = None,
):
  r"""Gradient ascent on the forget loss, :math:`\theta \leftarrow \theta + \eta \nabla_\theta
  \mathcal{L}_f` (SGD by default): ``fit`` with ``chain(gradient_ascent(), optimizer)``.

  ``retain`` is not used (accepted for the common signature).
  """
  del retain
  forget = required(forget, "forget", "gradient_ascent")
  tx = _ascent_chain(optimizer or cached_optimizer("sgd", learning_rate))
  return training.fit(loss_fn, params, forget, optimizer=tx, epochs=epochs, batch_size=batch_size, seed=seed,
                      state=state)


@functools.lru_cache(maxsize=32)
def _graddiff_step(
    loss_fn: LossFn, opt, forget_weight: float, retain_weight: float, micro_batch: int | None = None,
    stateful: bool = False,
):
  tx = optax.chain(_gradient_difference_tx(forget_weight, retain_weight), opt)
  if stateful:
    grad_aux = jax.grad(loss_fn, has_aux=True)

    @jax.jit
    def stateful_step(params, opt_state, forget_batch, retain_batch, state):
      forget_grads, state = grad_aux(params, forget_batch, state)
      retain_grads, state = grad_aux(params, retain_batch, state)
      updates, opt_state = tx.update(forget_grads, opt_state, params, retain_grads=retain_grads)
      return optax.apply_updates(params, updates), opt_state, state

    return tx, stateful_step
  grad = batch_grad(loss_fn, micro_batch)

  @jax.jit
  def step(params, opt_state, forget_batch, retain_batch):
    forget_grads = grad(params, forget_batch)
    retain_grads = grad(params, retain_batch)
    updates, opt_state = tx.update(forget_grads, opt_state, params, retain_grads=retain_grads)
    return optax.apply_updates(params, updates), opt_state

  return tx, step


def gradient_difference(
    loss_fn: LossFn, params: Params, *, forget: Data, retain: Data, seed: int,
    learning_rate: float = 4e-4, epochs: int = 1, batch_size: int = 128, forget_weight: float = 1.0,
    retain_weight: float = 1.0, micro_batch: int | None = None,
    optimizer: optax.GradientTransformation | None = None, state: Any = None,
):
  r"""Gradient difference (Liu et al., 2022): Adam on :math:`w_r \nabla \mathcal{L}_r - w_f \nabla
  \mathcal{L}_f`, each retain batch paired with the next (cycled) forget batch.

  One epoch is one pass over the retain set. With ``micro_batch``, both gradients are computed in
  micro-batches (``microbatch_value_and_grad``). With ``state``, the forget batch then the retain
  batch update it.
  """
  forget = required(forget, "forget", "gradient_difference")
  retain = required(retain, "retain", "gradient_difference")
  micro_batch = None if micro_batch is None else check_micro_batch(micro_batch)
  if state is not None and micro_batch is not None:
    raise ValueError("micro_batch and state cannot be combined: the state of one micro-batch would feed the next.")
  opt = optimizer or cached_optimizer("adam", learning_rate)
  tx, step = _graddiff_step(loss_fn, opt, float(forget_weight), float(retain_weight), micro_batch,
                            state is not None)
  opt_state = tx.init(params)
  forget_stream = cycled(forget, batch_size, seed=seed + 1)
  for epoch in range(epochs):
    for retain_batch in data_lib.batches(retain, batch_size, seed=seed, epoch=epoch):
      if state is None:
        params, opt_state = step(params, opt_state, next(forget_stream), retain_batch)
      else:
        params, opt_state, state = step(params, opt_state, next(forget_stream), retain_batch, state)
  return params if state is None else (params, state)


def union(forget: data_lib.Dataset, retain: data_lib.Dataset) -> data_lib.Dataset:
  """forget ∪ retain in id order (for a split of a dataset with ordered ids: the dataset itself)."""
  ids = np.concatenate([forget.ids, retain.ids])
  order = np.argsort(ids, kind="stable")
  return data_lib.Dataset(x=np.concatenate([forget.x, retain.x])[order], y=np.concatenate([forget.y, retain.y])[order],
                          ids=ids[order], num_classes=max(forget.num_classes, retain.num_classes), name=retain.name)


def ssd_alpha(alpha: float | None, alpha_scale: float, *, n_full: int, n_forget: int) -> float:
  """``alpha`` if given, else ``alpha_scale * n_full / n_forget`` (see ``ssd``)."""
  if alpha is not None:
    return float(alpha)
  if not 0.0 < alpha_scale < 1.0:
    raise ValueError(f"alpha_scale must be in (0, 1): at or above 1 SSD selects nothing; got {alpha_scale}.")
  return float(alpha_scale) * n_full / n_forget


def ssd(
    loss_fn: LossFn, params: Params, *, forget: Data, retain: Data, seed: int | None = None,
    alpha: float | None = None, alpha_scale: float = 0.5, dampening: float = 1.0, batch_size: int = 64,
    per_example: bool = True, full: Data | None = None, stats: dict | None = None,
) -> Params:
  r"""Selective Synaptic Dampening (Foster et al., AAAI 2024): diagonal Fisher importances on the
  forget set (:math:`I_f`) and on all training data (:math:`I_D`, default ``forget ∪ retain``),
  then ``ssd_dampen`` with threshold ``alpha``.

  Default alpha, relative: :math:`\alpha = s \cdot n / n_f` (:math:`s` = ``alpha_scale`` = 0.5,
  :math:`n` = ``len(full)``, :math:`n_f` = ``len(forget)``). The reason: with :math:`I_D` computed
  over data that contain the forget set, :math:`n I_D \ge n_f I_f` entry by entry (sums of
  non-negative terms), so :math:`I_f / I_D \le n / n_f` for every parameter, and any
  :math:`\alpha \ge n / n_f` selects nothing. The paper's alpha = 10 is at that bound when
  forgetting one class of ten (:math:`n / n_f \approx 10`), and above it for a larger forget set.
  Half the bound selects the parameters at least half as concentrated on the forget set as they
  could possibly be, for class and random forgetting alike (5.3 for one digit class, 5 for a random
  10%). Pass ``alpha`` to fix it instead.

  ``stats``, if given a dict, receives ``ssd_selection``'s numbers (how many parameters were
  dampened, the largest ratio :math:`I_f / I_D`) and the ``alpha`` used; when none is selected,
  ``SSDWarning`` says so (the model would come back unchanged). ``seed`` is not used.
  """
  del seed
  forget = required(forget, "forget", "ssd")
  full = union(forget, required(retain, "retain", "ssd")) if full is None else required(full, "full", "ssd")
  alpha = ssd_alpha(alpha, alpha_scale, n_full=len(full), n_forget=len(forget))
  # Both sets padded to bucket sizes: requests of nearby sizes share the compiled passes.
  i_f = fisher_diagonal(loss_fn, params, bucketed(forget, batch_size), batch_size=batch_size, per_example=per_example)
  i_d = fisher_diagonal(loss_fn, params, bucketed(full, batch_size), batch_size=batch_size, per_example=per_example)
  if stats is not None:
    stats.update(ssd_selection(i_f, i_d, alpha=alpha), alpha=alpha)
  return ssd_dampen(params, i_f, i_d, alpha=alpha, dampening=dampening)


def reset_repair(
    loss_fn: LossFn, params: Params, *, forget: Data | None = None, retain: Data, seed: int, init_fn,
    mask: Mask = "head", learning_rate: float = 3e-3, epochs: int = 10, batch_size: int = 128,
    key: PRNGKey | None = None, optimizer: optax.GradientTransformation | None = None, state: Any = None,
):
  """Re-initialises the layers selected by ``mask`` from ``init_fn(key)`` (``key`` defaults to
  ``fold_in(key(seed), 7)``), then fine-tunes on the retain set with Adam. 10 epochs: 5 leave
  MNIST-1D's retain accuracy 7 points below the retrained model's (its training set is memorised,
  and memorising it again takes longer than on digits).

  ``forget`` is not used (accepted for the common signature).
  """
  del forget
  retain = required(retain, "retain", "reset_repair")
  key = jax.random.fold_in(jax.random.key(seed), 7) if key is None else key
  params = reset_params(params, init_fn(key), mask)
  opt = optimizer or cached_optimizer("adam", learning_rate)
  return training.fit(loss_fn, params, retain, optimizer=opt, epochs=epochs, batch_size=batch_size, seed=seed,
                      state=state)
