"""Train the digits MLP with plain optax, then forget one class with SSD and with gradient difference.

Run: python examples/forget_class.py [--forget-class 3]
"""

import argparse

import jax
import jax.numpy as jnp
import optax

import jaxunlearn as ju


def main(forget_class: int = 3, epochs: int = 20) -> dict:
  train, test = ju.data.load("digits")
  forget, retain = ju.data.split_forget(train, ju.data.class_ids(train, forget_class))
  apply, params = ju.models.create("mlp", train.input_shape, train.num_classes, key=jax.random.key(0))
  loss = ju.losses.cross_entropy_loss(apply)

  # Plain optax training loop.
  opt = optax.adam(1e-3)
  opt_state = opt.init(params)

  @jax.jit
  def train_step(params, opt_state, batch):
    grads = jax.grad(loss)(params, batch)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for epoch in range(epochs):
    for batch in ju.data.batches(train, 128, seed=0, epoch=epoch):
      params, opt_state = train_step(params, opt_state, batch)

  def report(name, p):
    accs = {
        "forget": ju.training.dataset_accuracy(apply, p, forget),
        "retain": ju.training.dataset_accuracy(apply, p, retain),
    }
    print(f"{name:>20}: forget acc {accs['forget']:.3f}  retain acc {accs['retain']:.3f}")
    return accs

  results = {"before": report("before", params)}

  # 1. Selective Synaptic Dampening: importances, then one call of the transform.
  i_forget = ju.fisher_diagonal(loss, params, forget, batch_size=64)
  i_full = ju.fisher_diagonal(loss, params, train, batch_size=64)
  ssd = ju.selective_synaptic_dampening(alpha=5.0, dampening=1.0)
  zeros = jax.tree.map(jnp.zeros_like, params)  # no incoming update: dampen the parameters themselves
  updates, _ = ssd.update(zeros, ssd.init(params), params, forget_importance=i_forget, full_importance=i_full)
  results["ssd"] = report("after SSD", optax.apply_updates(params, updates))

  # 2. Gradient difference chained with Adam, one pass over the retain set.
  tx = optax.chain(ju.gradient_difference(forget_weight=1.0, retain_weight=1.0), optax.adam(3e-4))
  tx_state = tx.init(params)

  @jax.jit
  def graddiff_step(params, tx_state, forget_batch, retain_batch):
    updates, tx_state = tx.update(
        jax.grad(loss)(params, forget_batch), tx_state, params, retain_grads=jax.grad(loss)(params, retain_batch)
    )
    return optax.apply_updates(params, updates), tx_state

  unlearned = params
  forget_batches = list(ju.data.batches(forget, 128, seed=1))
  for i, retain_batch in enumerate(ju.data.batches(retain, 128, seed=0)):
    unlearned, tx_state = graddiff_step(unlearned, tx_state, forget_batches[i % len(forget_batches)], retain_batch)
  results["gradient_difference"] = report("after grad. diff.", unlearned)
  return results


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--forget-class", type=int, default=3)
  main(parser.parse_args().forget_class)
