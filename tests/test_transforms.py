"""The contract every unlearning transform must meet, and each one's numbers against references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxunlearn as ju


def _params(dtype=jnp.float32):
  return {
      "body": {"kernel": jnp.arange(12, dtype=jnp.float32).reshape(3, 4).astype(dtype) / 7, "bias": jnp.ones(4, dtype)},
      "head": [jnp.linspace(-1, 1, 5).astype(dtype)],
  }


def _like(tree, scale):
  return jax.tree_util.tree_map(lambda x: (jnp.ones_like(x, dtype=jnp.float32) * scale).astype(x.dtype), tree)


def _fresh_init(key):
  # Fresh parameters shaped like _params (used by layer_reset); dtype fixed up by the transform.
  return jax.tree_util.tree_map(lambda x: jax.random.normal(key, x.shape, jnp.float32), _params())


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


# ----------------------------------------------------------------------------------------------
# gradient ascent / difference
# ----------------------------------------------------------------------------------------------


def test_gradient_ascent_chains_with_adam():
  params = _params()
  grads = jax.tree_util.tree_map(lambda x: jnp.sin(x) + 0.1, params)
  tx = optax.chain(ju.gradient_ascent(), optax.adam(1e-2))
  ref = optax.adam(1e-2)
  u, _ = tx.update(grads, tx.init(params), params)
  u_ref, _ = ref.update(jax.tree_util.tree_map(lambda g: -g, grads), ref.init(params), params)
  chex.assert_trees_all_close(u, u_ref)
  # A step of ascent raises the loss it was given the gradient of.
  loss = lambda p: jnp.sum(jnp.square(p["head"][0] - 2.0))  # noqa: E731
  p = {"head": [jnp.zeros(3)]}
  sgd = optax.chain(ju.gradient_ascent(), optax.sgd(0.1))
  u, _ = sgd.update(jax.grad(loss)(p), sgd.init(p), p)
  assert loss(optax.apply_updates(p, u)) > loss(p)


def test_gradient_difference_closed_form_and_errors():
  params = _params()
  f = jax.tree_util.tree_map(lambda x: x * 3.0, params)
  r = jax.tree_util.tree_map(lambda x: x - 1.0, params)
  tx = ju.gradient_difference(forget_weight=0.5, retain_weight=2.0)
  u, _ = tx.update(f, tx.init(params), params, retain_grads=r)
  for uu, ff, rr in zip(*(jax.tree_util.tree_leaves(t) for t in (u, f, r))):
    np.testing.assert_allclose(uu, 2.0 * np.asarray(rr) - 0.5 * np.asarray(ff), rtol=1e-6)
  with pytest.raises(ValueError, match="retain_grads must have the same pytree structure"):
    tx.update(f, tx.init(params), params, retain_grads={"body": r["body"]})
  with pytest.raises(ValueError, match=r"retain_grads leaf 'head/0' has shape \(4,\)"):
    tx.update(f, tx.init(params), params, retain_grads={**r, "head": [jnp.zeros(4)]})
  with pytest.raises(TypeError, match="retain_grads"):
    tx.update(f, tx.init(params), params)


# ----------------------------------------------------------------------------------------------
# fisher_diagonal
# ----------------------------------------------------------------------------------------------


def _regression_problem(n=23, d=5, k=3, seed=0):
  rng = np.random.default_rng(seed)
  data = {"x": jnp.asarray(rng.normal(size=(n, d)), jnp.float32), "y": jnp.asarray(rng.integers(0, k, n), jnp.int32)}
  params = {"w": jnp.asarray(rng.normal(size=(d, k)), jnp.float32), "b": jnp.asarray(rng.normal(size=k), jnp.float32)}

  def loss(p, batch):
    logits = jnp.tanh(batch["x"] @ p["w"]) * 2.0 + p["b"][None, :]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, batch["y"][:, None], axis=1))

  return loss, params, data


def _loop_fisher_per_example(loss, params, data):
  n = len(data["y"])
  acc = jax.tree_util.tree_map(lambda p: np.zeros(p.shape, np.float64), params)
  for i in range(n):
    g = jax.grad(loss)(params, {k: v[i:i + 1] for k, v in data.items()})
    acc = jax.tree_util.tree_map(lambda a, gg: a + np.square(np.asarray(gg, np.float64)), acc, g)
  return jax.tree_util.tree_map(lambda a: a / n, acc)


def _loop_fisher_per_batch(loss, params, data, batch_size):
  n = len(data["y"])
  starts = list(range(0, n, batch_size))
  acc = jax.tree_util.tree_map(lambda p: np.zeros(p.shape, np.float64), params)
  for s in starts:
    g = jax.grad(loss)(params, {k: v[s:s + batch_size] for k, v in data.items()})
    acc = jax.tree_util.tree_map(lambda a, gg: a + np.square(np.asarray(gg, np.float64)), acc, g)
  return jax.tree_util.tree_map(lambda a: a / len(starts), acc)


@pytest.mark.parametrize("batch_size", [1, 4, 23, 64])
def test_fisher_per_example_matches_explicit_loop(batch_size):
  loss, params, data = _regression_problem()
  ref = _loop_fisher_per_example(loss, params, data)
  got = ju.fisher_diagonal(loss, params, data, batch_size=batch_size)
  chex.assert_trees_all_close(got, jax.tree_util.tree_map(lambda a: a.astype(np.float32), ref), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("batch_size", [4, 5, 23])
def test_fisher_per_batch_matches_explicit_loop(batch_size):
  loss, params, data = _regression_problem()
  ref = _loop_fisher_per_batch(loss, params, data, batch_size)
  got = ju.fisher_diagonal(loss, params, data, batch_size=batch_size, per_example=False)
  chex.assert_trees_all_close(got, jax.tree_util.tree_map(lambda a: a.astype(np.float32), ref), rtol=2e-5, atol=1e-7)


def test_fisher_unrolled_equals_rolled_and_keeps_bf16():
  loss, params, data = _regression_problem()
  a = ju.fisher_diagonal(loss, params, data, batch_size=4)
  b = ju.fisher_diagonal(loss, params, data, batch_size=4, unroll=True)
  chex.assert_trees_all_close(a, b, rtol=1e-6)
  p16 = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
  out = ju.fisher_diagonal(loss, p16, data, batch_size=4)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(out))


def test_fisher_bad_input():
  loss, params, data = _regression_problem()
  with pytest.raises(ValueError, match="batch_size must be a positive integer"):
    ju.fisher_diagonal(loss, params, data, batch_size=0)
  with pytest.raises(ValueError, match="same leading example axis"):
    ju.fisher_diagonal(loss, params, {"x": data["x"], "y": data["y"][:5]}, batch_size=4)
  with pytest.raises(ValueError, match="no examples"):
    ju.fisher_diagonal(loss, params, {k: v[:0] for k, v in data.items()}, batch_size=4)


@pytest.mark.parametrize("per_example", [True, False])
def test_fisher_under_pmap_equals_single_device(per_example):
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  loss, params, data = _regression_problem(n=8 * 6)
  # Each device holds 6 examples; with batch_size 3 the minibatches are the same as on one device.
  single = ju.fisher_diagonal(loss, params, data, batch_size=3, per_example=per_example)
  sharded = jax.tree_util.tree_map(lambda x: x.reshape((8, 6) + x.shape[1:]), data)
  fn = jax.pmap(
      lambda p, d: ju.fisher_diagonal(loss, p, d, batch_size=3, per_example=per_example, axis_name="dev"),
      axis_name="dev",
      in_axes=(None, 0),
  )
  out = jax.block_until_ready(fn(params, sharded))
  for dev in range(8):
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[dev], out), single, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
@pytest.mark.parametrize("per_example", [True, False])
@pytest.mark.parametrize("batch_size", [8, 7])
def test_fisher_under_jit_with_named_sharding_equals_single_device(axis_type, per_example, batch_size):
  from jax.sharding import AxisType, NamedSharding, PartitionSpec

  loss, params, data = _regression_problem(n=64)
  single = ju.fisher_diagonal(loss, params, data, batch_size=batch_size, per_example=per_example)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(getattr(AxisType, axis_type),))
  sharded = jax.device_put(data, NamedSharding(mesh, PartitionSpec("data")))
  assert len(sharded["x"].sharding.device_set) == 8
  fn = jax.jit(lambda p, d: ju.fisher_diagonal(loss, p, d, batch_size=batch_size, per_example=per_example))
  chex.assert_trees_all_close(fn(params, sharded), single, rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# SSD
# ----------------------------------------------------------------------------------------------


def _numpy_ssd(p, i_f, i_d, alpha, lam):
  p, i_f, i_d = (np.asarray(a, np.float64) for a in (p, i_f, i_d))
  out = p.copy()
  for idx in np.ndindex(p.shape):
    if i_f[idx] > alpha * i_d[idx]:
      out[idx] = p[idx] * min(lam * i_d[idx] / i_f[idx], 1.0)
  return out


@pytest.mark.parametrize("alpha,lam", [(10.0, 1.0), (2.0, 0.5), (0.5, 3.0)])
def test_ssd_dampen_matches_numpy(alpha, lam):
  rng = np.random.default_rng(1)
  params = {"a": jnp.asarray(rng.normal(size=(6, 7)), jnp.float32), "b": [jnp.asarray(rng.normal(size=9), jnp.float32)]}
  i_f = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.exponential(size=x.shape) ** 3, jnp.float32), params)
  i_d = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.exponential(size=x.shape), jnp.float32), params)
  i_d["a"] = i_d["a"].at[0, 0].set(0.0)  # zero full importance: dampened to zero when selected
  got = ju.ssd_dampen(params, i_f, i_d, alpha=alpha, dampening=lam)
  for g, p, f, d in zip(*(jax.tree_util.tree_leaves(t) for t in (got, params, i_f, i_d))):
    np.testing.assert_allclose(g, _numpy_ssd(p, f, d, alpha, lam), rtol=1e-6, atol=1e-7)
  changed = sum(int(np.sum(np.asarray(g) != np.asarray(p))) for g, p in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(params)))
  assert changed > 0


def test_ssd_transform_applies_dampening():
  rng = np.random.default_rng(2)
  params = {"w": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)}
  i_f = {"w": jnp.asarray(rng.exponential(size=(4, 4)) * 20, jnp.float32)}
  i_d = {"w": jnp.asarray(rng.exponential(size=(4, 4)), jnp.float32)}
  tx = ju.selective_synaptic_dampening(alpha=3.0, dampening=1.0)
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  u, _ = jax.jit(lambda p: tx.update(zero, tx.init(p), p, forget_importance=i_f, full_importance=i_d))(params)
  np.testing.assert_allclose(optax.apply_updates(params, u)["w"], _numpy_ssd(params["w"], i_f["w"], i_d["w"], 3.0, 1.0), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="needs params"):
    tx.update(params, tx.init(params), None, forget_importance=i_f, full_importance=i_d)


def test_ssd_bad_input():
  p = {"w": jnp.ones(3)}
  ok = {"w": jnp.ones(3)}
  with pytest.raises(ValueError, match="alpha must be > 0"):
    ju.ssd_dampen(p, ok, ok, alpha=0.0, dampening=1.0)
  with pytest.raises(ValueError, match="dampening must be > 0"):
    ju.selective_synaptic_dampening(alpha=1.0, dampening=-1.0)
  with pytest.raises(ValueError, match="forget_importance must have the same pytree structure"):
    ju.ssd_dampen(p, {"v": jnp.ones(3)}, ok, alpha=1.0, dampening=1.0)
  with pytest.raises(ValueError, match="full_importance leaf 'w' has shape"):
    ju.ssd_dampen(p, ok, {"w": jnp.ones(4)}, alpha=1.0, dampening=1.0)
  with pytest.raises(ValueError, match="forget_importance has non-finite values.*'w'"):
    ju.ssd_dampen(p, {"w": jnp.array([1.0, jnp.nan, 1.0])}, ok, alpha=1.0, dampening=1.0)
  with pytest.raises(ValueError, match="full_importance has non-finite"):
    ju.ssd_dampen(p, ok, {"w": jnp.array([1.0, jnp.inf, 1.0])}, alpha=1.0, dampening=1.0)
  with pytest.raises(ValueError, match="negative"):
    ju.ssd_dampen(p, ok, {"w": jnp.array([1.0, -1.0, 1.0])}, alpha=1.0, dampening=1.0)


# ----------------------------------------------------------------------------------------------
# Gaussian calibration and noise
# ----------------------------------------------------------------------------------------------


def _delta_of_sigma(sigma, eps, sens):
  from scipy.stats import norm

  a = sens / (2 * sigma)
  b = eps * sigma / sens
  return norm.cdf(a - b) - np.exp(eps) * norm.cdf(-a - b)


def test_gaussian_sigma_classical_closed_form():
  for eps, delta, sens in [(0.5, 1e-5, 1.0), (0.9, 1e-3, 2.5), (0.1, 1e-6, 0.3)]:
    assert ju.gaussian_sigma(eps, delta, sens, analytic=False) == pytest.approx(sens * np.sqrt(2 * np.log(1.25 / delta)) / eps, rel=1e-12)


@pytest.mark.parametrize("eps,delta,sens", [(0.5, 1e-5, 1.0), (1.0, 1e-5, 1.0), (4.0, 1e-6, 2.0), (20.0, 1e-3, 0.5)])
def test_gaussian_sigma_analytic_is_the_smallest_valid_sigma(eps, delta, sens):
  sigma = ju.gaussian_sigma(eps, delta, sens)
  assert _delta_of_sigma(sigma, eps, sens) <= delta * (1 + 1e-9)
  assert _delta_of_sigma(sigma * (1 - 1e-6), eps, sens) > delta
  if eps < 1:
    assert sigma < ju.gaussian_sigma(eps, delta, sens, analytic=False)


def test_gaussian_sigma_errors():
  with pytest.raises(ValueError, match="valid only for epsilon < 1"):
    ju.gaussian_sigma(1.0, 1e-5, 1.0, analytic=False)
  with pytest.raises(ValueError, match="epsilon must be"):
    ju.gaussian_sigma(0.0, 1e-5, 1.0)
  with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
    ju.gaussian_sigma(1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
    ju.gaussian_sigma(1.0, 0.0, 1.0)
  with pytest.raises(ValueError, match="sensitivity must be"):
    ju.gaussian_sigma(1.0, 1e-5, -2.0)


def test_gaussian_noise_statistics_and_fresh_keys():
  sigma = 0.3
  tx = ju.gaussian_noise(sigma, key=jax.random.key(11))
  zeros = {"a": jnp.zeros((400, 500)), "b": jnp.zeros(1000, jnp.bfloat16)}
  state = tx.init(zeros)
  step = jax.jit(tx.update)
  u1, state = step(zeros, state)
  u2, state = step(zeros, state)
  a1 = np.asarray(u1["a"], np.float64)
  # 200,000 draws: the sample std is within 1% of sigma with overwhelming probability (SE ~0.16%).
  assert abs(a1.std() - sigma) / sigma < 0.01
  assert abs(a1.mean()) < 5 * sigma / np.sqrt(a1.size)
  assert not np.allclose(u1["a"], u2["a"])
  assert u1["b"].dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="sigma must be >= 0"):
    ju.gaussian_noise(-1.0, key=jax.random.key(0))


# ----------------------------------------------------------------------------------------------
# reset and pruning
# ----------------------------------------------------------------------------------------------


def test_reset_params_masks():
  params = _params()
  fresh = jax.tree_util.tree_map(lambda x: x * 0 - 5, params)
  by_regex = ju.reset_params(params, fresh, r"^body/")
  by_predicate = ju.reset_params(params, fresh, lambda path: path.endswith("kernel"))
  by_tree = ju.reset_params(params, fresh, {"body": {"kernel": False, "bias": True}, "head": [False]})
  np.testing.assert_array_equal(by_regex["body"]["kernel"], -5)
  np.testing.assert_array_equal(by_regex["head"][0], params["head"][0])
  np.testing.assert_array_equal(by_predicate["body"]["kernel"], -5)
  np.testing.assert_array_equal(by_predicate["body"]["bias"], 1)
  np.testing.assert_array_equal(by_tree["body"]["bias"], -5)
  np.testing.assert_array_equal(by_tree["body"]["kernel"], params["body"]["kernel"])
  with pytest.raises(ValueError, match="matches no parameter.*body/kernel"):
    ju.reset_params(params, fresh, "nothing_here")
  with pytest.raises(ValueError, match="same structure as params"):
    ju.reset_params(params, fresh, {"body": True})
  with pytest.raises(ValueError, match="fresh must have the same pytree structure"):
    ju.reset_params(params, {"body": fresh["body"]}, "body")


def test_layer_reset_transform_resets_masked_and_passes_the_rest():
  params = _params()
  tx = ju.layer_reset("head", _fresh_init, key=jax.random.key(4))
  incoming = _like(params, 0.5)
  state = tx.init(params)
  u, state2 = jax.jit(tx.update)(incoming, state, params)
  new = optax.apply_updates(params, u)
  expected_fresh = _fresh_init(jax.random.split(jax.random.key(4))[1])
  np.testing.assert_allclose(new["head"][0], expected_fresh["head"][0], atol=1e-6)
  np.testing.assert_array_equal(u["body"]["kernel"], incoming["body"]["kernel"])
  u_again, _ = tx.update(incoming, state2, params)
  assert not np.allclose(u_again["head"][0], u["head"][0])  # the key is split each call
  with pytest.raises(ValueError, match="matches no parameter"):
    ju.layer_reset("nope", _fresh_init, key=jax.random.key(0)).init(params)
  with pytest.raises(ValueError, match="needs params"):
    tx.update(incoming, state, None)


def test_prune_smallest_matches_numpy():
  rng = np.random.default_rng(5)
  params = {"a": jnp.asarray(rng.normal(size=(8, 9)), jnp.float32), "b": jnp.asarray(rng.normal(size=30), jnp.float32), "c": jnp.ones(4)}
  got = ju.prune_smallest(params, 0.3, mask=lambda p: p in ("a", "b"))
  flat = np.concatenate([np.abs(np.asarray(params["a"])).ravel(), np.abs(np.asarray(params["b"])).ravel()])
  k = int(np.floor(0.3 * flat.size))
  threshold = np.sort(flat)[k - 1]
  for name in ("a", "b"):
    expected = np.where(np.abs(np.asarray(params[name])) <= threshold, 0.0, np.asarray(params[name]))
    np.testing.assert_array_equal(got[name], expected)
  np.testing.assert_array_equal(got["c"], params["c"])
  assert sum(int(np.sum(np.asarray(got[n]) == 0)) for n in ("a", "b")) == k
  np.testing.assert_array_equal(ju.prune_smallest(params, 0.0)["a"], params["a"])
  for bad in (-0.1, 1.0, 2):
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
      ju.prune_smallest(params, bad)


# ----------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------


def _np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_losses_against_numpy():
  rng = np.random.default_rng(7)
  w = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  w_teacher = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  apply = lambda p, x: x @ p  # noqa: E731
  x = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  y = jnp.asarray([0, 1, 2, 3, 4, 0], jnp.int32)
  mask = jnp.asarray([1, 1, 1, 1, 0, 0], jnp.float32)
  batch = {"x": x, "y": y, "mask": mask, "ids": jnp.arange(6)}
  logp = _np_log_softmax(np.asarray(x) @ np.asarray(w))
  m = np.asarray(mask, bool)
  ce = -logp[np.arange(6), np.asarray(y)]
  assert float(ju.losses.cross_entropy_loss(apply)(w, batch)) == pytest.approx(ce[m].mean(), rel=1e-5)
  kl_u = (-np.log(5) - logp.mean(-1))
  assert float(ju.losses.uniform_kl_loss(apply)(w, batch)) == pytest.approx(kl_u[m].mean(), rel=1e-5)
  t = 2.0
  tlogp = _np_log_softmax(np.asarray(x) @ np.asarray(w_teacher) / t)
  slogp = _np_log_softmax(np.asarray(x) @ np.asarray(w) / t)
  kl_t = (np.exp(tlogp) * (tlogp - slogp)).sum(-1) * t * t
  assert float(ju.losses.teacher_kl_loss(apply, w_teacher, temperature=t)(w, batch)) == pytest.approx(kl_t[m].mean(), rel=1e-5)
  assert float(ju.losses.teacher_kl_loss(apply, w)(w, batch)) == pytest.approx(0.0, abs=1e-6)


def test_random_label_loss_never_uses_the_true_label():
  apply = lambda p, x: jnp.broadcast_to(p, (x.shape[0], 4))  # noqa: E731
  n = 400
  y = jnp.asarray(np.arange(n) % 4, jnp.int32)
  batch = {"x": jnp.zeros((n, 1)), "y": y, "ids": jnp.arange(n)}
  loss = ju.losses.random_label_loss(apply, 4, key=jax.random.key(0))
  # With logits one-hot on the true class, every target is wrong: the loss equals log-prob of a
  # non-true class for every example.
  big = 30.0
  onehot_true = lambda p, x: big * jax.nn.one_hot(y, 4)  # noqa: E731
  l_true = ju.losses.random_label_loss(onehot_true, 4, key=jax.random.key(0))(None, batch)
  expected = -_np_log_softmax(np.array([big, 0, 0, 0]))[1]
  assert float(l_true) == pytest.approx(expected, rel=1e-4)
  # Same example, same label every call; the loss is finite for uniform logits.
  assert float(loss(jnp.zeros(4), batch)) == pytest.approx(np.log(4), rel=1e-5)
  with pytest.raises(ValueError, match="ids"):
    loss(jnp.zeros(4), {"x": batch["x"], "y": y})


def test_labels_out_of_range_are_never_a_silent_zero_gradient():
  rng = np.random.default_rng(8)
  w = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  apply = lambda p, x: x @ p  # noqa: E731
  x = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  loss = ju.losses.cross_entropy_loss(apply)
  for y in ([0, 1, 2, 3, 5, 0], [0, -1, 2, 3, 4, 0]):
    bad = {"x": x, "y": jnp.asarray(y, jnp.int32)}
    # Concrete labels: a clear error naming them and the model's output size.
    with pytest.raises(ValueError, match=r"labels \[(5|-1)\] are out of range for a model with 5 outputs"):
      loss(w, bad)
    with pytest.raises(ValueError, match=r"out of range"):
      ju.losses.random_label_loss(apply, 5, key=jax.random.key(0))(w, dict(bad, ids=jnp.arange(6)))
    # Traced labels: the loss and the gradient are NaN (a gather out of range gave a zero gradient).
    value, grad = jax.jit(jax.value_and_grad(loss))(w, bad)
    assert np.isnan(float(value)) and np.isnan(np.asarray(grad)).any()
    # fisher_diagonal refuses the non-finite result instead of returning zeros.
    with pytest.raises(ValueError, match="the Fisher diagonal has non-finite values.*labels are in range"):
      ju.fisher_diagonal(loss, w, bad, batch_size=2)
  # A padded example (mask 0) may carry any label; valid examples' gradients are unchanged.
  y = jnp.asarray([0, 1, 2, 3, 4, 99], jnp.int32)
  mask = jnp.asarray([1, 1, 1, 1, 1, 0], jnp.float32)
  g_pad = jax.jit(jax.grad(loss))(w, {"x": x, "y": y, "mask": mask})
  logp = _np_log_softmax(np.asarray(x[:5]) @ np.asarray(w))
  # d/dW of mean_i -logp[i, y_i] = x^T (softmax - onehot) / n, in float64.
  probs = np.exp(logp)
  probs[np.arange(5), np.arange(5)] -= 1.0
  np.testing.assert_allclose(g_pad, np.asarray(x[:5], np.float64).T @ probs / 5, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="labels must be integers"):
    loss(w, {"x": x, "y": jnp.zeros(6, jnp.float32)})


def test_dataset_refuses_labels_out_of_range():
  with pytest.raises(ValueError, match=r"labels \[10\] are out of range for num_classes=10"):
    ju.data.Dataset(x=np.zeros((2, 3), np.float32), y=np.array([1, 10]), ids=np.arange(2), num_classes=10, name="t")
  with pytest.raises(ValueError, match="labels y must be integers"):
    ju.data.Dataset(x=np.zeros((2, 3), np.float32), y=np.array([1.0, 2.0]), ids=np.arange(2), num_classes=10, name="t")


def test_ssd_in_a_chain_dampens_what_the_preceding_transforms_produced():
  rng = np.random.default_rng(3)
  params = {"w": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)}
  grads = {"w": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)}
  i_f = {"w": jnp.asarray(rng.exponential(size=(4, 4)) * 20, jnp.float32)}
  i_d = {"w": jnp.asarray(rng.exponential(size=(4, 4)), jnp.float32)}
  tx = optax.chain(optax.sgd(0.1), ju.selective_synaptic_dampening(alpha=3.0, dampening=1.0))
  u, _ = tx.update(grads, tx.init(params), params, forget_importance=i_f, full_importance=i_d)
  stepped = np.asarray(params["w"]) - 0.1 * np.asarray(grads["w"])  # what sgd alone would give
  np.testing.assert_allclose(optax.apply_updates(params, u)["w"], _numpy_ssd(stepped, i_f["w"], i_d["w"], 3.0, 1.0),
                             rtol=1e-5, atol=1e-6)
  # The states are optax's EmptyState, under the public names.
  assert ju.SSDState is optax.EmptyState and ju.GradientAscentState is optax.EmptyState
  assert isinstance(ju.gradient_difference().init(params), optax.EmptyState)


def test_path_mask_matches_whole_segments_and_resets_only_those():
  params = {"dropout": {"rate": jnp.ones(2)}, "out": {"kernel": jnp.ones(3)}, "output": {"kernel": jnp.ones(4)},
            "blocks": [{"out": {"bias": jnp.ones(5)}}]}
  fresh = jax.tree_util.tree_map(jnp.zeros_like, params)
  got = ju.reset_params(params, fresh, ju.path_mask("out"))
  reset = {k for k, v in [("dropout", got["dropout"]["rate"]), ("out", got["out"]["kernel"]),
                          ("output", got["output"]["kernel"]), ("blocks/0/out", got["blocks"][0]["out"]["bias"])]
           if float(v.sum()) == 0}
  assert reset == {"out", "blocks/0/out"}
  # A plain string matches anywhere: "out" also selects dropout and output (documented).
  loose = ju.reset_params(params, fresh, "out")
  assert float(loose["dropout"]["rate"].sum()) == 0 and float(loose["output"]["kernel"].sum()) == 0
  assert ju.path_mask("blocks/0")("blocks/0/out/bias") and not ju.path_mask("blocks/0")("blocks/01/w")


def test_add_gaussian_noise_is_the_transform_in_one_call():
  params = {"w": jnp.ones((50, 40), jnp.bfloat16), "b": jnp.zeros(7)}
  key = jax.random.key(11)
  tx = ju.gaussian_noise(0.3, key=key)
  sub = jax.random.split(key)[1]  # the transform splits its key before drawing
  u, _ = tx.update(params, tx.init(params))
  one = ju.add_gaussian_noise(params, 0.3, key=sub)
  for a, b in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(one)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
  with pytest.raises(ValueError, match="sigma must be >= 0"):
    ju.add_gaussian_noise(params, -1.0, key=key)
