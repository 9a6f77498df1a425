"""Certified removal against a NumPy/SciPy reimplementation of Guo et al. (2020)'s algorithm."""

import json
import math
import os

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from jaxunlearn import certified


def _data(n=240, d=6, classes=2, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  centers = rng.normal(size=(classes, d)) * 1.5
  y = rng.integers(0, classes, size=n)
  x = x + centers[y]
  ids = rng.permutation(10_000)[:n] + 5  # not 0..n-1, not in row order
  return x, y, ids


def _prepared(x):
  x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _signs(y, classes):
  return np.where(y == 1, 1.0, -1.0)[:, None] if classes == 2 else np.where(y[:, None] == np.arange(classes), 1.0, -1.0)


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _gradient(w, x, y, b, lam):
  """Gradient of sum-form perturbed logistic loss, one column."""
  return x.T @ ((_sigmoid(y * (x @ w)) - 1.0) * y) + lam * len(x) * w + b


def _exact(x, y, b, lam):
  f = lambda w: np.sum(np.logaddexp(0, -y * (x @ w))) + 0.5 * lam * len(x) * w @ w + b @ w  # noqa: E731
  res = scipy.optimize.minimize(f, np.zeros(x.shape[1]), jac=lambda w: _gradient(w, x, y, b, lam), method="BFGS",
                                options={"gtol": 1e-10, "maxiter": 10_000})
  return res.x


def _reference_newton(w, x_rem, y_rem, x_gone, y_gone, lam):
  """The paper's removal step and data-dependent bound, one column, in NumPy."""
  s = _sigmoid(y_rem * (x_rem @ w))
  h = x_rem.T @ (x_rem * (s * (1 - s))[:, None]) + lam * len(x_rem) * np.eye(len(w))
  g = x_gone.T @ ((_sigmoid(y_gone * (x_gone @ w)) - 1.0) * y_gone) + lam * len(x_gone) * w
  delta = scipy.linalg.solve(h, g, assume_a="pos")
  bound = 0.25 * np.linalg.norm(x_rem, 2) * np.linalg.norm(delta) * np.linalg.norm(x_rem @ delta)
  return w + delta, bound


def test_training_reaches_the_perturbed_optimum():
  x, y, ids = _data()
  model = certified.fit(x, y, ids, lam=1e-2, sigma=1.0, seed=3)
  xp, ys = _prepared(x[np.argsort(ids)]), _signs(y[np.argsort(ids)], 2)
  w_ref = _exact(xp, ys[:, 0], model._b[:, 0], 1e-2)
  np.testing.assert_allclose(model.weights[:, 0], w_ref, rtol=1e-6, atol=1e-7)
  assert model.gradient_residual() < 1e-8
  assert model.spent == pytest.approx(model.gradient_residual())


@pytest.mark.parametrize("classes", [2, 3])
def test_newton_step_and_bound_match_the_reference(classes):
  x, y, ids = _data(classes=classes, seed=classes)
  model = certified.fit(x, y, ids, lam=1e-2, sigma=5.0, epsilon=10.0)
  order = np.argsort(ids)
  xp, ys, sorted_ids = _prepared(x[order]), _signs(y[order], classes), ids[order]
  w0, spent0 = model.weights, model._spent.copy()
  gone_ids = [int(sorted_ids[17]), int(sorted_ids[3]), int(sorted_ids[100])]
  out = model.remove(gone_ids)
  gone = np.isin(sorted_ids, gone_ids)
  bounds = []
  for k in range(w0.shape[1]):
    w_ref, b_ref = _reference_newton(w0[:, k], xp[~gone], ys[~gone, k], xp[gone], ys[gone, k], 1e-2)
    np.testing.assert_allclose(model.weights[:, k], w_ref, rtol=1e-10, atol=1e-12)
    bounds.append(b_ref)
  assert out.kind == "newton"
  assert out.bound == pytest.approx(np.linalg.norm(bounds), rel=1e-9)
  assert out.spent == pytest.approx(np.linalg.norm(spent0 + np.array(bounds)), rel=1e-9)
  assert out.ids == tuple(sorted(gone_ids))
  assert out.budget == pytest.approx(5.0 * 10.0 / math.sqrt(2 * math.log(1.5 / 1e-4)))


def test_residual_never_exceeds_the_bound_and_retrain_fires_exactly_at_the_budget():
  x, y, ids = _data(n=160, seed=7)
  lam, sigma, epsilon, delta = 1e-2, 0.3, 1.0, 1e-4
  model = certified.fit(x, y, ids, lam=lam, sigma=sigma, epsilon=epsilon, delta=delta)
  order = np.argsort(ids)
  xp, ys, sorted_ids = _prepared(x[order]), _signs(y[order], 2)[:, 0], ids[order]
  alive = np.ones(len(ids), bool)
  budget = sigma * epsilon / math.sqrt(2 * math.log(1.5 / delta))
  rng = np.random.default_rng(0)
  kinds = []
  for _ in range(100):
    victim = int(rng.choice(sorted_ids[alive]))
    gone = sorted_ids == victim
    spent_before, w_before = model.spent, model.weights[:, 0]
    _, beta = _reference_newton(w_before, xp[alive & ~gone], ys[alive & ~gone], xp[gone], ys[gone], lam)
    out = model.remove([victim])
    alive &= ~gone
    expected = "retrain" if spent_before + beta > budget else "newton"
    assert out.kind == expected, (spent_before, beta, budget)
    kinds.append(out.kind)
    actual = np.linalg.norm(_gradient(model.weights[:, 0], xp[alive], ys[alive], model._b[:, 0], lam))
    assert actual <= out.spent * (1 + 1e-9) + 1e-12
    assert out.spent <= budget
  assert 0 < kinds.count("retrain") < 100  # the sequence exercised both paths
  assert len(model) == 60 and model.retrains == kinds.count("retrain")


def test_removal_moves_the_model_towards_the_exact_retrain():
  x, y, ids = _data(n=200, seed=11)
  model = certified.fit(x, y, ids, lam=1e-2, sigma=10.0, epsilon=10.0)
  order = np.argsort(ids)
  xp, ys, sorted_ids = _prepared(x[order]), _signs(y[order], 2)[:, 0], ids[order]
  gone_ids = sorted_ids[:20]
  before = model.weights[:, 0]
  assert model.remove(gone_ids).kind == "newton"
  keep = ~np.isin(sorted_ids, gone_ids)
  exact = _exact(xp[keep], ys[keep], model._b[:, 0], 1e-2)
  assert np.linalg.norm(model.weights[:, 0] - exact) < 0.05 * np.linalg.norm(before - exact)


def test_bad_input_is_refused_with_a_clear_error():
  x, y, ids = _data(n=40)
  with pytest.raises(ValueError, match="NaN"):
    certified.fit(np.where(np.arange(40)[:, None] == 5, np.nan, x), y, ids)
  with pytest.raises(ValueError, match="lam"):
    certified.fit(x, y, ids, lam=0.0)
  with pytest.raises(ValueError, match="delta"):
    certified.fit(x, y, ids, delta=1.5)
  with pytest.raises(ValueError, match="unique"):
    certified.fit(x, y, np.zeros(40, int))
  with pytest.raises(TypeError, match="integers"):
    certified.fit(x, y, ids.astype(float))
  model = certified.fit(x, y, ids, lam=1e-2)
  w = model.weights
  with pytest.raises(ValueError, match="empty"):
    model.remove([])
  with pytest.raises(ValueError, match="unknown ids"):
    model.remove([int(ids[0]), 10**9])
  with pytest.raises(TypeError):
    model.remove(["3"])
  with pytest.raises(ValueError, match="every remaining"):
    model.remove(ids)
  np.testing.assert_array_equal(model.weights, w)  # nothing changed
  model.remove([int(ids[0])])
  with pytest.raises(ValueError, match="already removed"):
    model.remove([int(ids[0])])
  with pytest.raises(ValueError, match="columns"):
    model.predict(np.zeros((2, 3)))


def _record(d):
  with open(os.path.join(d, "certified.json")) as f:
    return json.load(f)


def test_save_load_forget_and_damage(tmp_path):
  x, y, ids = _data(n=80, classes=3, seed=5)
  model = certified.fit(x, y, ids, lam=1e-2, sigma=5.0, epsilon=5.0)
  d = str(tmp_path / "model")
  model.save(d)
  (tmp_path / "model" / "notes.txt").write_text("mine")  # a stray file of the user's
  first = _record(d)["state"]
  out = certified.forget(d, [int(ids[4]), int(ids[9])])
  assert out.kind == "newton" and out.ids == tuple(sorted([int(ids[4]), int(ids[9])]))
  back = certified.load(d)
  model.remove([int(ids[4]), int(ids[9])])
  np.testing.assert_array_equal(back.weights, model.weights)
  assert back.ledger[0]["ids"] == list(out.ids) and back.spent == pytest.approx(model.spent)
  # The old state (holding the removed rows) is gone; the stray file stays; removed rows are zeros on disk.
  assert not os.path.exists(os.path.join(d, first)) and (tmp_path / "model" / "notes.txt").exists()
  rows = np.isin(np.sort(ids), [ids[4], ids[9]])
  assert np.all(back._x[rows] == 0) and np.any(back._x[~rows] != 0, axis=1).all()
  np.testing.assert_array_equal(back.predict(x), model.predict(x))
  # An older copy cannot overwrite the directory; unknown ids write nothing.
  stale = certified.fit(x, y, ids, lam=1e-2)
  with pytest.raises(ValueError, match="another certified model"):
    stale.save(d)
  with pytest.raises(ValueError, match="unknown ids"):
    certified.forget(d, [10**9])
  assert not os.path.exists(os.path.join(d, "pending.json"))
  # An interrupted request is refused by load and finished by forget(d).
  with open(os.path.join(d, "pending.json"), "w") as f:
    json.dump({"ids": [int(ids[20])]}, f)
  with pytest.raises(certified.CheckpointError, match="interrupted"):
    certified.load(d)
  assert certified.forget(d).ids == (int(ids[20]),)
  assert int(ids[20]) not in certified.load(d).ids
  assert certified.forget(d) is None
  # Damage is named.
  state = os.path.join(d, _record(d)["state"])
  victim = max((os.path.join(r, f) for r, _, fs in os.walk(state) for f in fs), key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.seek(10)
    f.write(b"\x00garbage")
  with pytest.raises(certified.CheckpointError, match="corrupted"):
    certified.load(d)
  record = _record(d)
  record["meta"]["sigma"] = 100.0
  with open(os.path.join(d, "certified.json"), "w") as f:
    json.dump(record, f)
  with pytest.raises(certified.CheckpointError, match="modified"):
    certified.load(d)
  with pytest.raises(FileNotFoundError):
    certified.load(str(tmp_path / "nothing"))


@pytest.mark.parametrize("point", ["certified:pending", "certified:state_written", "certified:switched",
                                   "certified:swept"])
def test_an_interrupted_forget_is_finished_exactly_once(tmp_path, monkeypatch, point):
  from jaxunlearn._src import sisa_store

  x, y, ids = _data(n=60, seed=9)
  model = certified.fit(x, y, ids, lam=1e-2, sigma=5.0, epsilon=5.0)
  d = str(tmp_path / "m")
  model.save(d)
  victims = [int(ids[1]), int(ids[2])]

  class Crash(Exception):
    pass

  def hook(at):
    if at == point:
      raise Crash(at)

  monkeypatch.setattr(sisa_store, "fault", hook)
  with pytest.raises(Crash):
    certified.forget(d, victims)
  monkeypatch.setattr(sisa_store, "fault", lambda at: None)
  with pytest.raises(certified.CheckpointError, match="interrupted"):
    certified.load(d)  # the request is on record: no model without it is handed out
  certified.forget(d)
  back = certified.load(d)
  model.remove(victims)
  np.testing.assert_array_equal(back.weights, model.weights)
  assert [e["ids"] for e in back.ledger] == [sorted(victims)]
  states = [e for e in os.listdir(d) if e.startswith("state-")]
  assert states == [_record(d)["state"]]  # no older state (holding the removed rows) is left
