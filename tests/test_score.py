"""The NeurIPS score command and relearn time."""

import jax
import optax
import pytest

from jaxunlearn import cli, data, losses, methods, metrics, models, training
from jaxunlearn._src import score


@pytest.mark.slow  # ~130 s (17 methods): run with `python -m pytest -m slow` (test_methods runs `score` on a small case by default)
def test_random_forgetting_score_with_32_models(tmp_path, capsys):
  # The check: on digits, random 10% forgetting, N >= 32, at least one method beats
  # fine-tuning on the retain set alone.
  out = tmp_path / "score.json"
  png = tmp_path / "score.png"
  rc = cli.main(["score", "--models", "32", "--forget", "random:0.1", "--json", str(out), "--plot", str(png)])
  assert rc == 0
  import json

  report = json.loads(out.read_text())
  assert report["models"] == 32 and set(report["methods"]) == set(methods.names())
  ref = report["retrain"]
  for name, row in [("original", report["original"]), *report["methods"].items()]:
    assert len(row["epsilon"]) == report["forget_size"] == 144
    assert 0.0 <= row["forget_quality"] <= 1.0
    # The score is forget quality times the two accuracy ratios (closed form).
    expected = row["forget_quality"] * row["retain_acc"] / ref["retain_acc"] * row["test_acc"] / ref["test_acc"]
    assert row["score"] == pytest.approx(expected, rel=1e-12), name
  others = [row["score"] for name, row in report["methods"].items() if name != "finetune"]
  assert max(others) > report["methods"]["finetune"]["score"]
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "epsilon per forget example" in capsys.readouterr().out


def test_score_bad_input(capsys):
  assert cli.main(["score", "--models", "2"]) == 2
  assert "--models 2" in capsys.readouterr().err
  assert cli.main(["score", "--methods", "finetune,oracle"]) == 2
  err = capsys.readouterr().err
  assert "oracle" in err and "reset_repair" in err
  assert cli.main(["score", "--forget", "random:1.0"]) == 2
  assert "fraction" in capsys.readouterr().err


def test_histogram_bins():
  bins = score.histogram([0.0, 0.49, 0.5, 2.9, 50.0])
  counts = dict(bins)
  assert counts["[0,0.5)"] == 2 and counts["[0.5,1)"] == 1 and counts["[2,3)"] == 1 and counts["[6,50]"] == 1
  assert sum(counts.values()) == 5


@pytest.fixture(scope="module")
def class_three(digits):
  train, _ = digits
  forget, _ = data.split_forget(train, data.class_ids(train, 3))
  apply, params = models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  return forget, apply, params, losses.cross_entropy_loss(apply)


def test_relearn_steps_counts_like_an_explicit_loop(class_three):
  forget, apply, params, loss = class_three
  opt = optax.sgd(0.05)
  target = 0.6
  got = metrics.relearn_steps(loss, apply, params, forget, target_accuracy=target, optimizer=opt, batch_size=16,
                              seed=2, max_steps=300)
  # Reference: take the same steps by hand, checking accuracy before each one.
  p, state, steps = params, opt.init(params), 0
  batches = [b for e in range(40) for b in data.batches(forget, 16, seed=2, epoch=e)]
  while training.dataset_accuracy(apply, p, forget) < target:
    g = jax.grad(loss)(p, batches[steps])
    updates, state = opt.update(g, state, p)
    p = optax.apply_updates(p, updates)
    steps += 1
  assert got == steps and steps > 0


def test_relearn_steps_limits(class_three):
  forget, apply, params, loss = class_three
  opt = optax.sgd(1e-6)
  assert metrics.relearn_steps(loss, apply, params, forget, target_accuracy=1.0, optimizer=opt, batch_size=16,
                               seed=0, max_steps=3) is None
  assert metrics.relearn_steps(loss, apply, params, forget, target_accuracy=0.0, optimizer=opt, batch_size=16,
                               seed=0) == 0
  with pytest.raises(ValueError, match="target_accuracy"):
    metrics.relearn_steps(loss, apply, params, forget, target_accuracy=1.5, optimizer=opt, batch_size=16, seed=0)
