r"""Methods that change the weights directly, then repair on the retain set: pruning + fine-tune,
l1-sparse fine-tuning, Gaussian noise + fine-tune, and Fisher forgetting."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import training
from jaxunlearn._src.base import LossFn, Params
from jaxunlearn._src.importance import bucketed, fisher_diagonal
from jaxunlearn._src.noise import add_gaussian_noise, gaussian_sigma
from jaxunlearn._src.recipes import Data, cached_optimizer, epochs_of, required, run_steps
from jaxunlearn._src.relabel import fit_masked
from jaxunlearn._src.reset import prune_smallest


def prune_finetune(
    loss_fn: LossFn, params: Params, *, forget: Data | None = None, retain: Data, seed: int,
    sparsity: float = 0.9, learning_rate: float = 1e-3, epochs: int = 10, batch_size: int = 128,
):
  r"""Pruning, then fine-tuning (Jia et al., "Model Sparsity Can Simplify Machine Unlearning",
  NeurIPS 2023): global one-shot magnitude pruning of the weight matrices and kernels (leaves of
  rank >= 2; biases and norms are kept) at ``sparsity``, then Adam on the retain set with the
  pruned entries held at exactly zero (``freeze_entries`` before and after the optimizer).

  Jia et al. prune ResNets to 95%; the default here is 90%, 10 epochs (tuned on digits: at 50%
  the pruned model still knows the forget class, and fine-tuning keeps it). ``forget`` is not used.
  """
  del forget
  retain = required(retain, "retain", "prune_finetune")
  weights = jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)
  pruned = prune_smallest(params, sparsity, weights)
  # Entries zero after pruning stay zero; every other entry trains.
  trainable = jax.tree.map(lambda p, w: (p != 0) | (not w), pruned, weights)
  return fit_masked(loss_fn, pruned, retain, trainable, opt=cached_optimizer("adam", learning_rate), epochs=epochs,
                    batch_size=batch_size, seed=seed)


class DecayingL1State(NamedTuple):
  """State holding the step count of ``decaying_l1`` and the run's length :math:`T`."""

  count: jax.Array
  total_steps: jax.Array


def decaying_l1(alpha: float, total_steps: int) -> optax.GradientTransformation:
  r"""Adds the subgradient of a linearly decaying L1 penalty to the updates:
  :math:`g_t \leftarrow g_t + \alpha_t\, \mathrm{sign}(\theta_t)`,
  :math:`\alpha_t = \alpha \max(0, 1 - t/T)` (:math:`T` = ``total_steps``), the gradient of
  :math:`\alpha_t \|\theta\|_1` (Jia et al., NeurIPS 2023's l1-sparse unlearning; their code
  decays per epoch, here per step). Chain it before the optimizer. :math:`T` is kept in the
  state (``DecayingL1State``), so a run of another length can reuse the compiled step by
  starting from a state with its own ``total_steps``.
  """
  if alpha < 0 or total_steps <= 0:
    raise ValueError(f"need alpha >= 0 and total_steps > 0, got {alpha} and {total_steps}.")

  def init_fn(params):
    del params
    return DecayingL1State(jnp.zeros((), jnp.int32), jnp.asarray(total_steps, jnp.float32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("decaying_l1 needs params (the penalty's subgradient is sign(params)).")
    a = alpha * jnp.maximum(0.0, 1.0 - state.count.astype(jnp.float32) / state.total_steps)
    out = jax.tree.map(lambda g, p: g + (a * jnp.sign(p)).astype(g.dtype), updates, params)
    return out, DecayingL1State(state.count + 1, state.total_steps)

  return optax.GradientTransformation(init_fn, update_fn)


@functools.lru_cache(maxsize=32)
def _l1_chain(alpha: float, learning_rate: float, momentum: float):
  # One chain per setting; each run's length goes into its initial state.
  return optax.chain(decaying_l1(alpha, 1), optax.sgd(learning_rate, momentum=momentum))


def l1_sparse(
    loss_fn: LossFn, params: Params, *, forget: Data | None = None, retain: Data, seed: int,
    alpha: float = 2e-2, learning_rate: float = 1e-2, momentum: float = 0.9, epochs: int = 5, batch_size: int = 128,
):
  r"""l1-sparse unlearning (Jia et al., NeurIPS 2023): fine-tune on the retain set with
  :math:`\mathcal L_r(\theta) + \alpha_t \|\theta\|_1`, :math:`\alpha_t` decaying linearly to 0
  over the run (``decaying_l1``), with SGD + momentum as the authors' scripts (their lr 0.01).
  Their alpha (5e-4 to 1e-4) is for thousands of steps on CIFAR; over the few hundred steps of a
  small dataset the penalty must be stronger: 2e-2, tuned on digits (1e-2 leaves the forget class
  two-thirds known, 5e-2 costs retain accuracy). ``forget`` is not used.
  """
  del forget
  retain = required(retain, "retain", "l1_sparse")
  total = epochs * data_lib.num_batches(len(retain), batch_size)
  tx = _l1_chain(float(alpha), float(learning_rate), float(momentum))
  l1_state, sgd_state = tx.init(params)
  state = (l1_state._replace(total_steps=jnp.asarray(max(total, 1), jnp.float32)), sgd_state)
  out, _ = run_steps(loss_fn, tx, params, state, epochs_of(retain, batch_size, seed=seed, epochs=epochs))
  return out


def noise_finetune(
    loss_fn: LossFn, params: Params, *, forget: Data | None = None, retain: Data, seed: int,
    epsilon: float = 1.0, delta: float = 1e-5, sensitivity: float = 0.03, learning_rate: float = 1e-3,
    epochs: int = 10, batch_size: int = 128, stats: dict | None = None,
):
  r"""Calibrated Gaussian noise, then fine-tuning on the retain set:
  :math:`\theta \leftarrow \theta + \mathcal N(0, \sigma^2 I)` with
  :math:`\sigma` = ``gaussian_sigma(epsilon, delta, sensitivity)`` (analytic Gaussian mechanism),
  then Adam on the retain set.

  ``sensitivity`` is the user's bound on how far (L2) the parameters can move when the forget
  set is removed; it is what makes the noise a guarantee, and nothing here can check it. The
  default (0.03 with epsilon 1 and delta 1e-5, sigma ~ 0.1; tuned on digits and MNIST-1D, with 10
  epochs of fine-tuning) is a setting for the demo models, not a
  certificate. Fine-tuning on the retain set is post-processing with data both worlds share, so
  it keeps whatever guarantee the noise gave. The noise key is ``fold_in(key(seed), 11)``.
  ``stats`` receives ``sigma``.
  """
  del forget
  retain = required(retain, "retain", "noise_finetune")
  sigma = gaussian_sigma(epsilon, delta, sensitivity)
  if stats is not None:
    stats["sigma"] = sigma
  noisy = add_gaussian_noise(params, sigma, key=jax.random.fold_in(jax.random.key(seed), 11))
  return training.fit(loss_fn, noisy, retain, optimizer=cached_optimizer("adam", learning_rate), epochs=epochs,
                      batch_size=batch_size, seed=seed)


@jax.jit
def _fisher_noise(params, fisher, key, alpha, max_variance):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))

  def leaf(p, f, k):
    var = jnp.minimum(alpha / (f.astype(jnp.float32) + 1e-8), max_variance)
    return (p + jnp.sqrt(var) * jax.random.normal(k, p.shape, jnp.float32)).astype(p.dtype)

  return jax.tree.unflatten(treedef, [leaf(p, f, k) for p, f, k in zip(leaves, jax.tree.leaves(fisher), keys)])


def fisher_forgetting(
    loss_fn: LossFn, params: Params, *, forget: Data | None = None, retain: Data, seed: int,
    alpha: float = 1e-8, max_variance: float = 0.1, batch_size: int = 128, stats: dict | None = None,
):
  r"""Fisher forgetting (Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020):
  noise whose variance is the inverse of the retain set's diagonal Fisher,

  .. math:: \theta \leftarrow \theta + \sqrt{\Sigma}\,\varepsilon, \quad
            \Sigma_j = \min\big(\alpha / (F_j + 10^{-8}),\; v_{\max}\big), \quad \varepsilon \sim \mathcal N(0, I)

  with :math:`F` = ``fisher_diagonal`` of the retain set (per-example, empirical: the true
  labels). Parameters the retain set needs (large :math:`F_j`) barely move; those it does not
  need, which may encode the forget set, are scrambled. The authors' code clamps the variance at
  1e3 and also averages it per output row and zeroes the forgotten class's output row; the row
  rules are not used here (the latter needs to know a class is forgotten). On the digits MLP a
  clamp of 1e3 or even 1 destroys the model (the many parameters with near-zero retain Fisher get
  unit-scale noise), so ``max_variance`` is 0.1 and ``alpha`` 1e-8 (theirs 3e-6), tuned on
  digits; even tuned, the noise alone does not remove a whole class there (see
  ``benchmarks/results/methods.md``). The noise key is
  ``fold_in(key(seed), 13)``. ``stats`` receives the mean noise standard deviation.
  """
  del forget
  retain = required(retain, "retain", "fisher_forgetting")
  # Padded to a bucket size: retain sets of nearby sizes (requests of other sizes) share one pass.
  fisher = fisher_diagonal(loss_fn, params, bucketed(retain, batch_size), batch_size=batch_size, per_example=True)
  out = _fisher_noise(params, fisher, jax.random.fold_in(jax.random.key(seed), 13), jnp.float32(alpha),
                      jnp.float32(max_variance))
  if stats is not None:
    f = jnp.concatenate([x.reshape(-1) for x in jax.tree.leaves(fisher)])
    stats["mean_std"] = float(jnp.mean(jnp.sqrt(jnp.minimum(alpha / (f + 1e-8), max_variance))))
  return out
