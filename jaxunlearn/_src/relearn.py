"""Relearn time: how quickly forgotten knowledge comes back (Golatkar et al., CVPR 2020)."""

from __future__ import annotations

import itertools

import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import training
from jaxunlearn._src.base import ApplyFn, LossFn, Params


def relearn_steps(
    loss_fn: LossFn,
    apply_fn: ApplyFn,
    params: Params,
    forget: data_lib.Dataset,
    *,
    target_accuracy: float,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    seed: int,
    max_steps: int = 200,
) -> int | None:
  r"""Optimizer steps on the forget set until its accuracy is back to ``target_accuracy``.

  Starting from ``params``, takes steps of ``optimizer`` on minibatches of the forget set (the
  order of ``data.batches``, epoch after epoch) and returns the first :math:`t` with
  :math:`\mathrm{acc}_{\text{forget}}(\theta_t) \ge` ``target_accuracy`` (0 if it already holds).
  A model that only hides the forgotten data relearns it in a few steps; one that never saw it
  takes about as long as learning it afresh. Use the original model's forget accuracy as target.

  Args:
    loss_fn: ``loss(params, batch)`` honouring ``batch["mask"]``.
    apply_fn: ``apply(params, x) -> logits``.
    params: the (unlearned) parameters to start from.
    forget: the forget set.
    target_accuracy: accuracy to reach, in [0, 1].
    optimizer: the relearning optimizer (build it once and reuse it across models: one compile).
    batch_size: examples per step.
    seed: shuffle seed.
    max_steps: give up after this many steps.

  Returns:
    The number of steps, or ``None`` when ``max_steps`` steps did not reach the target.

  Example:
    >>> import jax, optax
    >>> from jaxunlearn import data, losses, metrics, models
    >>> train, _ = data.load("digits")
    >>> forget, _ = data.split_forget(train, data.class_ids(train, 3))
    >>> apply, params = models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
    >>> metrics.relearn_steps(losses.cross_entropy_loss(apply), apply, params, forget,
    ...                       target_accuracy=0.0, optimizer=optax.sgd(0.1), batch_size=32, seed=0)
    0
  """
  if not 0.0 <= target_accuracy <= 1.0:
    raise ValueError(f"target_accuracy must be in [0, 1], got {target_accuracy}.")
  if max_steps < 0:
    raise ValueError(f"max_steps must be >= 0, got {max_steps}.")
  step = training.compiled_step(loss_fn, optimizer)
  opt_state = optimizer.init(params)
  stream = itertools.chain.from_iterable(
      data_lib.batches(forget, batch_size, seed=seed, epoch=e) for e in itertools.count()
  )
  for t in range(max_steps + 1):
    if training.dataset_accuracy(apply_fn, params, forget) >= target_accuracy:
      return t
    if t == max_steps:
      return None
    params, opt_state, _ = step(params, opt_state, next(stream))
  return None
