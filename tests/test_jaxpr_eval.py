"""The jaxpr interpreter alone: flatten (nested jit inlined) and evaluate (perturb, record)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn._src.jaxpr_eval import evaluate, flatten


@jax.jit
def _inner(h, b):
  return jnp.tanh(h + b[None]) * 2.0  # a literal inside a nested jit


def _program(x, w, b):
  table = jnp.arange(3.0)  # a constant captured by the trace
  h = x @ w
  lo, hi = jnp.split(_inner(h, b), 2, axis=1)  # a multiple-results primitive
  return jnp.sum(lo * hi) + jnp.sum(table)


def _args():
  k = jax.random.split(jax.random.key(0), 3)
  return jax.random.normal(k[0], (5, 3)), jax.random.normal(k[1], (3, 4)), jax.random.normal(k[2], (4,))


def test_flattened_program_evaluates_to_the_function():
  args = _args()
  eqns, ins, consts, outs = flatten(jax.make_jaxpr(_program)(*args))
  assert not any(e.primitive.name in ("pjit", "jit") for e in eqns)  # the nested jit was inlined
  (value,), recorded = evaluate(eqns, ins, consts, outs, list(args), {}, {})
  np.testing.assert_allclose(value, _program(*args), rtol=1e-6)
  assert recorded == {}


def test_perturbing_an_output_gives_its_cotangent_and_records_operands():
  x, w, b = _args()
  eqns, ins, consts, outs = flatten(jax.make_jaxpr(_program)(x, w, b))
  i = next(k for k, e in enumerate(eqns) if e.primitive.name == "dot_general")

  def perturbed(eps):
    (value,), rec = evaluate(eqns, ins, consts, outs, [x, w, b], {i: eps}, {i: 0})
    return value, rec

  delta, rec = jax.grad(perturbed, has_aux=True)(jnp.zeros((5, 4)))
  np.testing.assert_array_equal(rec[i], x)  # operand 0 of x @ w
  # The cotangent of h = x @ w, by hand: d/dh of sum(lo * hi) with [lo, hi] = 2 tanh(h + b).
  def of_h(h):
    lo, hi = jnp.split(2.0 * jnp.tanh(h + b[None]), 2, axis=1)
    return jnp.sum(lo * hi)
  np.testing.assert_allclose(delta, jax.grad(of_h)(x @ w), rtol=1e-5, atol=1e-6)
