"""Layer reset, pruning and path masks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxunlearn as ju
from tree_fixtures import fresh_init as _fresh_init
from tree_fixtures import like as _like
from tree_fixtures import params as _params


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
