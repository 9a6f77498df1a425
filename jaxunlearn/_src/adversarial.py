r"""Unlearning with adversarial examples: ``nearest_adversarial`` (PGD-L2 with a growing radius),
AMUN (Ebrahimpour-Boroojeny et al., 2025) and ARU, attack-and-reset (Jung et al., 2024).

Neither paper has published code. What each paper fixes and what was chosen here is said in the
docstrings.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import training
from jaxunlearn._src.base import ApplyFn, LossFn, Params
from jaxunlearn._src.recipes import Data, cached_optimizer, required, union
from jaxunlearn._src.relabel import mask_count, saliency_mask


def _norms(v: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1).astype(jnp.float32)), axis=1))


def _scale(v: jax.Array, factor: jax.Array) -> jax.Array:
  return v * factor.reshape((-1,) + (1,) * (v.ndim - 1)).astype(v.dtype)


@functools.lru_cache(maxsize=32)
def _pgd(apply_fn: ApplyFn, steps: int):
  @jax.jit
  def attack(params, x, y, radius):
    """PGD-L2 within ``radius`` (per example): the first iterate that changes the label, else the last."""
    y = y.astype(jnp.int32)

    def loss(xa):
      logp = jax.nn.log_softmax(apply_fn(params, xa).astype(jnp.float32), axis=-1)
      return -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=-1))

    step = 2.5 * radius / steps

    def body(_, carry):
      delta, best, found = carry
      g = jax.grad(loss)(x + delta)
      delta = delta + _scale(g, step / jnp.maximum(_norms(g), 1e-12))
      delta = _scale(delta, jnp.minimum(1.0, radius / jnp.maximum(_norms(delta), 1e-12)))
      flipped = jnp.argmax(apply_fn(params, x + delta), -1) != y
      new = flipped & ~found
      best = jnp.where(new.reshape((-1,) + (1,) * (x.ndim - 1)), x + delta, best)
      return delta, best, found | flipped

    init = (jnp.zeros_like(x), x, jnp.zeros(x.shape[0], bool))
    _, best, found = jax.lax.fori_loop(0, steps, body, init, unroll=True)
    return best, found, jnp.argmax(apply_fn(params, best), -1)

  return attack


def nearest_adversarial(
    apply_fn: ApplyFn, params: Params, x: np.ndarray, y: np.ndarray, *, start: float = 1 / 32, growth: float = 2.0,
    rounds: int = 8, steps: int = 10, batch_size: int = 256,
) -> dict[str, np.ndarray]:
  r"""For each input, an L2-close input the model gives a label other than ``y``.

  Round :math:`r = 0, 1, \dots` runs ``steps`` of L2 projected gradient ascent on the
  cross-entropy (step :math:`2.5 \varepsilon_r / \text{steps}`, projection onto the ball) within
  radius :math:`\varepsilon_r = \text{start}\cdot\bar{\|x\|}\cdot\text{growth}^r`
  (:math:`\bar{\|x\|}` the inputs' mean L2 norm, so the radius is scale-free), for the examples
  not yet flipped; each keeps the first iterate whose predicted label differs from ``y``. Inputs
  are not clipped to a data range.

  Returns:
    ``{"x": adversarial inputs, "label": the model's label for them, "radius": the radius
    :math:`\varepsilon_r` of the round that found each, "found": bool}``; an example not flipped
    within ``rounds`` rounds has ``found`` False and ``x`` its last attempt.
  """
  x, y = np.asarray(x, np.float32), np.asarray(y)
  if len(x) == 0:
    raise ValueError("nearest_adversarial got no inputs.")
  attack = _pgd(apply_fn, int(steps))
  base = float(np.mean(np.sqrt(np.sum(np.square(x.reshape(len(x), -1)), axis=1))))
  out_x, label = x.copy(), np.zeros(len(x), np.int64)
  radius, found = np.full(len(x), np.nan, np.float32), np.zeros(len(x), bool)
  size = int(batch_size)  # chunks padded to one shape: inputs of every count share one program
  for r in range(rounds):
    eps = start * base * growth ** r
    pending = np.flatnonzero(~found)
    if not len(pending):
      break
    for a in range(0, len(pending), size):
      rows = pending[a:a + size]
      pad = size - len(rows)
      xb = np.concatenate([x[rows], np.zeros((pad,) + x.shape[1:], x.dtype)])
      yb = np.concatenate([y[rows], np.zeros(pad, y.dtype)])
      best, ok, pred = (np.asarray(v) for v in attack(params, xb, yb, jnp.full(size, eps, jnp.float32)))
      ok = ok[:len(rows)]
      out_x[rows] = best[:len(rows)]
      label[rows[ok]] = pred[:len(rows)][ok]
      radius[rows[ok]] = eps
      found[rows[ok]] = True
  return {"x": out_x, "label": label, "radius": radius, "found": found}


def _adversarial_set(forget: data_lib.Dataset, adv: dict, retain: data_lib.Dataset | None) -> data_lib.Dataset:
  keep = np.flatnonzero(adv["found"])
  # Ids disjoint from every real example's.
  first = max(int(np.max(forget.ids)), -1 if retain is None else int(np.max(retain.ids))) + 1
  return dataclasses.replace(forget, x=adv["x"][keep], y=adv["label"][keep].astype(forget.y.dtype),
                             ids=np.arange(first, first + len(keep), dtype=np.int64), name=f"{forget.name}-adversarial")


def amun(
    loss_fn: LossFn, params: Params, *, forget: Data, retain: Data | None = None, seed: int, apply_fn: ApplyFn,
    learning_rate: float = 1e-3, epochs: int = 5, batch_size: int = 128, with_retain: bool = True,
    start: float = 1 / 32, growth: float = 2.0, rounds: int = 8, steps: int = 10, stats: dict | None = None,
):
  r"""AMUN, "adversarial mixup unlearning" (Ebrahimpour-Boroojeny et al., 2025, arXiv
  2503.00917): fine-tune on the forget set together with, for each forget example, its nearest
  adversarial example labelled as the model labels it (``nearest_adversarial``), plus the retain
  set when ``with_retain``:

  .. math:: \min_\theta \sum_{(x,y) \in D_f} \ell(\theta; x, y) + \sum_{x' \in D_{adv}} \ell(\theta; x', f_{\theta_0}(x'))
            \;[\, + \sum_{D_r} \ell \,]

  Training on the wrong-labelled neighbours lowers the model's confidence on the forget
  examples towards its confidence on unseen data, without the collapse of gradient ascent. The
  paper fixes the data (forget + adversarial, + retain if available) and the search for the
  nearest adversarial example by a growing radius; chosen here: L2 PGD, 10 steps per radius, the
  radius starting at 1/32 of the mean input norm and doubling up to 8 times, Adam on the union
  (tuned on digits). Forget examples never flipped contribute no adversarial example.
  ``stats`` receives how many were found and their median radius.
  """
  forget = required(forget, "forget", "amun")
  adv = nearest_adversarial(apply_fn, params, forget.x, forget.y, start=start, growth=growth, rounds=rounds,
                            steps=steps)
  retain = required(retain, "retain", "amun") if with_retain else None
  data = union(forget, _adversarial_set(forget, adv, retain))
  if retain is not None:
    data = union(data, retain)
  if stats is not None:
    stats.update(found=int(adv["found"].sum()), of=len(forget),
                 median_radius=float(np.nanmedian(adv["radius"])) if adv["found"].any() else None)
  return training.fit(loss_fn, params, data, optimizer=cached_optimizer("adam", learning_rate), epochs=epochs,
                      batch_size=batch_size, seed=seed)


def aru(
    loss_fn: LossFn, params: Params, *, forget: Data, retain: Data, seed: int, apply_fn: ApplyFn, init_fn,
    fraction: float = 0.05, learning_rate: float = 1e-3, epochs: int = 5, batch_size: int = 128,
    start: float = 1 / 32, growth: float = 2.0, rounds: int = 8, steps: int = 10, stats: dict | None = None,
):
  r"""ARU, attack and reset (Jung et al., 2024, "Attack and Reset for Unlearning", arXiv
  2401.08998): adversarial noise on the forget set picks the parameters to re-initialise, then the
  model is fine-tuned on the retain set.

  1. :math:`\delta_i` = the nearest adversarial perturbation of each forget example
     (``nearest_adversarial``).
  2. Mask: the ``fraction`` of parameter entries with the largest
     :math:`|\nabla_\theta \mathcal L(\theta_0; \{(x_i + \delta_i, y_i)\})|`, ranked globally
     (``saliency_mask`` on the perturbed forget set with its true labels): the parameters through
     which the attack moves the forget predictions.
  3. Those entries are reset to a fresh initialisation (``init_fn(fold_in(key(seed), 19))``),
     then Adam fine-tunes every parameter on the retain set.

  The paper fixes attack -> mask -> reset -> fine-tune and resets whole convolutional filters;
  its mask criterion is not restated here from code (none is published). Chosen: the gradient
  magnitude above, element-wise (the same rule for dense and convolutional layers), 5% of the
  entries, the attack of ``amun``. ``stats`` receives how many entries were reset.
  """
  forget, retain = required(forget, "forget", "aru"), required(retain, "retain", "aru")
  adv = nearest_adversarial(apply_fn, params, forget.x, forget.y, start=start, growth=growth, rounds=rounds,
                            steps=steps)
  perturbed = dataclasses.replace(forget, x=adv["x"])
  mask = saliency_mask(loss_fn, params, perturbed, fraction=fraction)
  fresh = init_fn(jax.random.fold_in(jax.random.key(seed), 19))
  reset = jax.tree.map(lambda p, f, m: jnp.where(m > 0, f.astype(p.dtype), p), params, fresh, mask)
  if stats is not None:
    stats.update(reset=mask_count(mask), found=int(adv["found"].sum()))
  return training.fit(loss_fn, reset, retain, optimizer=cached_optimizer("adam", learning_rate), epochs=epochs,
                      batch_size=batch_size, seed=seed)
