"""Many models in one program: each lane must train exactly as it would alone."""

import jax
import numpy as np
import optax
import pytest

from jaxunlearn import losses, models, training
from jaxunlearn._src import lanes


@pytest.fixture(scope="module")
def setup(digits):
  train, _ = digits
  small = train.take(np.arange(300))
  apply, p0 = models.create("mlp", small.input_shape, 10, key=jax.random.key(0))
  return small, apply, p0, losses.cross_entropy_loss(apply), optax.adam(1e-3)


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_each_lane_trains_like_fit_alone(setup):
  ds, _, p0, loss, opt = setup
  params = lanes.stack([p0] * 3)
  schedule = lanes.epochs_schedule(ds, lanes=3, epochs=2, batch_size=64, seeds=[5, 6, 7])
  for strategy, tol in (("sequential", 0.0), ("vmap", 1e-5)):
    out, _ = lanes.run(loss, opt, params, lanes.init_states(opt, params), lanes.table(ds), schedule, strategy=strategy)
    for lane, seed in enumerate([5, 6, 7]):
      # Reference: the plain training loop, one model, the same id-hash shuffling.
      ref = training.fit(loss, p0, ds, optimizer=opt, epochs=2, batch_size=64, seed=seed)
      assert _max_diff(lanes.unstack(out, lane), ref) <= tol, (strategy, lane)


def test_inactive_steps_change_nothing_and_lanes_are_independent(setup):
  ds, _, p0, loss, opt = setup
  pos = np.arange(len(ds))
  full = lanes.epoch_rows(pos, ds.ids, batch_size=64, seed=1, epoch=0)
  short = (full[0][:2], full[1][:2])
  other = lanes.epoch_rows(pos[:100], ds.ids[:100], batch_size=64, seed=9, epoch=0)
  params = lanes.stack([p0] * 8)
  state = lanes.init_states(opt, params)
  tbl = lanes.table(ds)
  # Lane 0 runs the full epoch in both; the other lanes run different (and shorter) schedules.
  a = lanes.stack_lanes([full] + [short] * 7, 64)
  b = lanes.stack_lanes(
      [full] + [other] * 3 + [(full[0][:0], full[1][:0])] * 4, 64)
  assert a.active.sum(0).tolist() == [len(full[0])] + [2] * 7
  for strategy in lanes.STRATEGIES:
    out_a, st_a = lanes.run(loss, opt, params, state, tbl, a, strategy=strategy)
    out_b, st_b = lanes.run(loss, opt, params, state, tbl, b, strategy=strategy)
    assert _max_diff(lanes.unstack(out_a, 0), lanes.unstack(out_b, 0)) == 0.0, strategy
    # Lanes with no steps at all keep their parameters and optimizer state bit for bit.
    assert _max_diff(lanes.unstack(out_b, 7), p0) == 0.0
    assert _max_diff(lanes.unstack(st_b, 7), opt.init(p0)) == 0.0
    # Two steps are two steps: the same as the first two steps of the full schedule, alone.
    two = lanes.stack_lanes([short], 64)
    out_two, _ = lanes.run(loss, opt, lanes.stack([p0]), lanes.init_states(opt, lanes.stack([p0])), tbl, two,
                           strategy="sequential")
    if strategy == "sequential":
      assert _max_diff(lanes.unstack(out_a, 3), lanes.unstack(out_two, 0)) == 0.0


def test_init_many_matches_one_by_one():
  init = models.init_fn("mlp", (8, 8, 1), 10)
  key = jax.random.key(3)
  many = lanes.init_many(init, key, [4, 9])
  for lane, salt in enumerate([4, 9]):
    assert _max_diff(lanes.unstack(many, lane), init(jax.random.fold_in(key, salt))) == 0.0


def test_bad_arguments(setup):
  ds, _, p0, loss, opt = setup
  params = lanes.stack([p0] * 2)
  schedule = lanes.epochs_schedule(ds, lanes=3, epochs=1, batch_size=64, seeds=[0, 1, 2])
  with pytest.raises(ValueError, match="3 lanes but params have 2"):
    lanes.run(loss, opt, params, lanes.init_states(opt, params), lanes.table(ds), schedule)
  with pytest.raises(ValueError, match="unknown strategy"):
    lanes.run(loss, opt, params, lanes.init_states(opt, params), lanes.table(ds), schedule, strategy="async")
  with pytest.raises(ValueError, match="one seed per lane"):
    lanes.epochs_schedule(ds, lanes=3, epochs=1, batch_size=64, seeds=[0])
