"""LM recipes with FSDP-sharded parameters and data-sharded batches on 8 simulated devices,
against the same recipes on one device."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

from jaxunlearn.lm import data, models, recipes, sharding

TINY = models.DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=256, hidden_layer=0)


def _batches():
  world = data.generate(data.WorldConfig.preset("tiny"))
  f, r = world.qa(world.forget_authors("forget10")), world.qa(world.retain_authors("forget10"))
  forget = data.qa_batch([q.question for q in f][:12], [q.answer for q in f][:12], length=128)
  retain = data.qa_batch([q.question for q in r][:24], [q.answer for q in r][:24], length=128)
  idk = data.idk_batch([q.question for q in f][:12], world.idk, seed=0, length=128)
  return forget, retain, idk


@pytest.mark.parametrize("method", ["gradient_difference", "rmu"])
def test_sharded_recipe_equals_one_device(method):
  assert jax.device_count() == 8
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto))
  lm = models.create(TINY, seed=0)
  forget, retain, idk = _batches()
  kw = dict(forget=forget, retain=retain, epochs=2, batch_size=8, seed=0)
  extra = {"trainable": "blocks/0/mlp/down"} if method == "rmu" else {}
  one = getattr(recipes, method)(lm, lm.params, **kw, **extra)
  placed = sharding.shard_params(lm.params, mesh)
  specs = sharding.fsdp_shardings(lm.params, mesh)
  assert tuple(specs["head"]["kernel"].spec) == ("fsdp", None)  # 32 x 259: 259 does not divide over 4
  assert tuple(specs["blocks"][0]["mlp"]["gate"]["kernel"].spec) == (None, "fsdp")  # 32 x 64: the larger
  assert tuple(specs["norm"]["scale"].spec) == (None,)  # small: replicated
  many = getattr(recipes, method)(lm, placed, **kw, **extra, batch_sharding=sharding.batch_sharding(mesh))
  for a, b, s in zip(jax.tree.leaves(one), jax.tree.leaves(many), jax.tree.leaves(specs)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=2e-6)
    assert b.sharding.is_equivalent_to(s, b.ndim)  # the result (and so the optimizer state) stays sharded


def test_explicit_axes_are_refused_by_name():
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Explicit, AxisType.Explicit))
  lm = models.create(TINY, seed=0)
  with pytest.raises(ValueError, match="explicit axis types"):
    sharding.shard_params(lm.params, mesh)
  with pytest.raises(ValueError, match="no 'fsdp' axis"):
    sharding.fsdp_shardings(lm.params, jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,)))


def test_saved_params_come_back_on_another_mesh_and_bad_input_is_named(tmp_path):
  lm = models.create(models.DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64), seed=1)
  wide = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Auto,))
  narrow = jax.make_mesh((2, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2, devices=jax.devices()[:4])
  sharding.save_params(str(tmp_path / "p"), sharding.shard_params(lm.params, wide))
  back = sharding.restore_params(str(tmp_path / "p"), narrow, template=lm.params)
  assert jax.tree.structure(back) == jax.tree.structure(lm.params)
  for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(lm.params)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert got.sharding.mesh.shape == narrow.shape
  specs = jax.tree.leaves(jax.tree.map(lambda s: tuple(s.spec), sharding.fsdp_shardings(lm.params, narrow)),
                          is_leaf=lambda x: isinstance(x, tuple))
  assert [tuple(a.sharding.spec) for a in jax.tree.leaves(back)] == specs and ("fsdp",) in [tuple(x for x in s if x) for s in specs]
  with pytest.raises(FileExistsError, match="never overwrites"):
    sharding.save_params(str(tmp_path / "p"), lm.params)
  with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
    sharding.restore_params(str(tmp_path / "missing"), wide)
  other = models.create(models.DecoderConfig(d_model=64, n_layers=2, n_heads=2, d_ff=64), seed=1)
  with pytest.raises(ValueError, match="shaped like the template: .*kernel: checkpoint float32"):
    sharding.restore_params(str(tmp_path / "p"), wide, template=other.params)
