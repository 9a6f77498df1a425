"""The contract every unlearning transform must meet (``CASES``: every transform, every check);
each transform's numbers against references are in the test file of its module."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxunlearn as ju
from tree_fixtures import fresh_init as _fresh_init
from tree_fixtures import like as _like
from tree_fixtures import params as _params


# name -> (factory kwargs for inject_hyperparams, extra update kwargs built from params, static args)
CASES = {
    "gradient_ascent": (ju.gradient_ascent, {}, lambda p: {}, ()),
    "gradient_difference": (
        ju.gradient_difference,
        {"forget_weight": 0.5, "retain_weight": 2.0},
        lambda p: {"retain_grads": _like(p, 0.25)},
        (),
    ),
    "selective_synaptic_dampening": (
        ju.selective_synaptic_dampening,
        {"alpha": 2.0, "dampening": 1.0},
        lambda p: {"forget_importance": _like(p, 5.0), "full_importance": _like(p, 1.0)},
        (),
    ),
    "gaussian_noise": (ju.gaussian_noise, {"sigma": 0.1, "key": jax.random.key(3)}, lambda p: {}, ("key",)),
    "layer_reset": (
        ju.layer_reset,
        {"mask": "head", "init_fn": _fresh_init, "key": jax.random.key(4)},
        lambda p: {},
        ("mask", "init_fn", "key"),
    ),
}


def _make(name):
  factory, kwargs, _, _ = CASES[name]
  return factory(**kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_compiles_once(name):
  chex.clear_trace_counter()
  tx = _make(name)
  extra = CASES[name][2]
  params = _params()
  state = tx.init(params)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(grads, state, params):
    return tx.update(grads, state, params, **extra(params))

  u1, state = step(_like(params, 1.0), state, params)
  u2, state = step(_like(params, 3.0), state, jax.tree_util.tree_map(lambda x: x + 1, params))
  chex.assert_trees_all_equal_shapes(u1, u2, params)


@pytest.mark.parametrize("name", sorted(CASES))
def test_ignores_unknown_extra_args(name):
  tx = _make(name)
  params = _params()
  updates, _ = tx.update(_like(params, 1.0), tx.init(params), params, unrelated_arg=1, **CASES[name][2](params))
  chex.assert_trees_all_equal_shapes(updates, params)


@pytest.mark.parametrize("name", sorted(CASES))
def test_works_inside_inject_hyperparams(name):
  factory, kwargs, extra, static = CASES[name]
  injected = optax.inject_hyperparams(factory, static_args=static)(**kwargs)
  plain = factory(**kwargs)
  params = _params()
  grads = _like(params, 1.5)
  u_inj, _ = jax.jit(lambda g, s, p: injected.update(g, s, p, **extra(p)))(grads, injected.init(params), params)
  u_plain, _ = plain.update(grads, plain.init(params), params, **extra(params))
  chex.assert_trees_all_close(u_inj, u_plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_keeps_dtype(name, dtype):
  tx = _make(name)
  extra = CASES[name][2]
  params = _params(dtype)
  updates, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra(p)))(_like(params, 1.0), tx.init(params), params)
  for leaf in jax.tree_util.tree_leaves(updates):
    assert leaf.dtype == dtype
  new = optax.apply_updates(params, updates)
  for leaf in jax.tree_util.tree_leaves(new):
    assert leaf.dtype == dtype


# layer_reset needs an init_fn building nnx.State: see test_layer_reset_on_nnx_state.
@pytest.mark.parametrize("name", sorted(set(CASES) - {"layer_reset"}))
def test_accepts_nnx_state(name):
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  assert isinstance(state, nnx.State)
  tx = _make(name)
  updates, _ = tx.update(_like(state, 1.0), tx.init(state), state, **CASES[name][2](state))
  assert jax.tree_util.tree_structure(updates) == jax.tree_util.tree_structure(state)
  nnx.update(model, optax.apply_updates(state, updates))


def test_layer_reset_on_nnx_state():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  init = lambda key: nnx.state(nnx.Linear(3, 2, rngs=nnx.Rngs(params=key)), nnx.Param)  # noqa: E731
  tx = ju.layer_reset("bias", init, key=jax.random.key(1))
  updates, _ = tx.update(jax.tree_util.tree_map(jnp.zeros_like, state), tx.init(state), state)
  new = optax.apply_updates(state, updates)
  np.testing.assert_array_equal(new["kernel"][...], state["kernel"][...])
  np.testing.assert_allclose(new["bias"][...], init(jax.random.split(jax.random.key(1))[1])["bias"][...], atol=1e-6)
