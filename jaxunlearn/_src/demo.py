"""The end-to-end job behind ``jaxunlearn demo``: train, retrain, unlearn with every method, compare."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np
import optax

from jaxunlearn._src import id_text, loaders, selection
from jaxunlearn._src import losses, metrics, models, training
from jaxunlearn._src import methods as methods_lib
from jaxunlearn._src.relearn import relearn_steps


RELEARN = {"learning_rate": 1e-3, "batch_size": 32, "max_steps": 100}


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
  """Runs ``fn`` twice: returns (result of the second run, first-run seconds, second-run seconds).

  The first run includes compilation; the second is steady state. Compile time is their difference.
  """
  times, out = [], None
  for _ in range(2):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return out, times[0], times[1]


def prepare(*, dataset: str, forget: str, model: str, seed: int, data_dir: str | None):
  """Loads the data, selects the forget set and builds the model: ``(train, test, forget, retain,
  apply, params, init, loss)`` (``params`` initialised from ``seed``)."""
  train, test = loaders.load(dataset, data_dir=data_dir)
  forget_ids = id_text.parse_forget(forget, train, seed=seed)
  forget_ds, retain_ds = selection.split_forget(train, forget_ids)
  apply, params = models.create(model, train.input_shape, train.num_classes, key=jax.random.key(seed))
  init = models.init_fn(model, train.input_shape, train.num_classes)
  return train, test, forget_ds, retain_ds, apply, params, init, losses.cross_entropy_loss(apply)


def holdout_for(forget_ds, test, *, by_class: bool):
  """Held-out examples distributed like the forget set, for methods that calibrate against them
  (SCRUB+R's rewinding): for class forgetting the test examples of the forgotten classes, for
  random forgetting (a uniform sample of the training set) the whole test set."""
  if not by_class:
    return test
  keep = np.isin(test.y, np.unique(forget_ds.y))
  if not keep.any():
    raise ValueError("the test set has no example of the forgotten classes (a holdout is needed).")
  return dataclasses.replace(test, x=test.x[keep], y=test.y[keep], ids=test.ids[keep])


def run(
    *,
    dataset: str = "digits",
    forget: str = "class:3",
    methods: list[str] | None = None,
    model: str = "mlp",
    seed: int = 0,
    epochs: int = 20,
    batch_size: int = 128,
    data_dir: str | None = None,
    log: Callable[[str], None] = lambda _: None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
  """Runs the demo and returns a JSON-ready report (see ``jaxunlearn demo --json``).

  ``log(message)`` says what starts; ``progress(stage, done, total)`` counts the stages (the two
  trainings and one per method) as they end.
  """
  methods = methods_lib.names() if methods is None else methods
  stages = 2 + len(methods)
  tick = (lambda stage, done: None) if progress is None else (lambda stage, done: progress(stage, done, stages))
  train, test, forget_ds, retain_ds, apply, init_params, init, loss = prepare(
      dataset=dataset, forget=forget, model=model, seed=seed, data_dir=data_dir
  )

  # Class forgetting: also the test accuracy on the forgotten classes alone (0 for the retrained model).
  forgotten_classes = np.unique(forget_ds.y) if forget.startswith("class:") else None
  in_forgotten = None if forgotten_classes is None else np.isin(test.y, forgotten_classes)

  def evaluate(params, first_s: float, steady_s: float, reference_forget_logits: np.ndarray | None):
    """(metrics of ``params``, its forget-set logits); JS is against ``reference_forget_logits``
    (None: this model is the reference)."""
    logits = {name: training.predict(apply, params, ds.x) for name, ds in
              (("forget", forget_ds), ("retain", retain_ds), ("test", test))}
    losses_ = {name: metrics.per_example_loss(z, ds.y) for (name, z), ds in
               zip(logits.items(), (forget_ds, retain_ds, test))}
    row = {
        "forget_acc": metrics.accuracy(logits["forget"], forget_ds.y),
        "retain_acc": metrics.accuracy(logits["retain"], retain_ds.y),
        "test_acc": metrics.accuracy(logits["test"], test.y),
        "test_forgotten_classes_acc": None if in_forgotten is None or not in_forgotten.any() else metrics.accuracy(
            logits["test"][in_forgotten], test.y[in_forgotten]),
        # Loss-threshold attack, forget (as members) vs test: 0.5 = indistinguishable.
        "mia_auc": metrics.loss_threshold_mia(losses_["forget"], losses_["test"])["auc"],
        # Logistic attack trained retain-vs-test on per-example loss, applied to the forget set.
        "mia_forget_member_rate": metrics.logistic_mia(
            losses_["retain"], losses_["test"], losses_["forget"], seed=seed
        )["forget_member_rate"],
    }
    reference = logits["forget"] if reference_forget_logits is None else reference_forget_logits
    row["js_to_retrain"] = metrics.js_divergence(logits["forget"], reference)
    row.update(seconds=steady_s, compile_seconds=max(first_s - steady_s, 0.0))
    return row, logits["forget"]

  optimizer = optax.adam(1e-3)
  fit = lambda ds: training.fit(  # noqa: E731
      loss, init_params, ds, optimizer=optimizer, epochs=epochs, batch_size=batch_size, seed=seed
  )
  log(f"training the original model on {len(train)} examples ({epochs} epochs)")
  original, original_first, original_steady = _timed(lambda: fit(train))
  tick("original", 1)
  log(f"retraining without the {len(forget_ds)} forget examples (the gold standard)")
  retrained, first, steady = _timed(lambda: fit(retain_ds))
  tick("retrained", 2)
  report = {
      "dataset": dataset,
      "model": model,
      "forget": forget,
      "forget_size": int(len(forget_ds)),
      "seed": seed,
      "backend": jax.default_backend(),
  }
  report["retrain"], retrain_forget_logits = evaluate(retrained, first, steady, None)
  report["original"], _ = evaluate(original, original_first, original_steady, retrain_forget_logits)
  report["methods"] = {}
  # Relearn time: Adam steps on the forget set until forget accuracy is back to the original's.
  relearn_opt = optax.adam(RELEARN["learning_rate"])
  target = report["original"]["forget_acc"]

  def relearn(params):
    return relearn_steps(loss, apply, params, forget_ds, target_accuracy=target, optimizer=relearn_opt,
                         batch_size=RELEARN["batch_size"], seed=seed, max_steps=RELEARN["max_steps"])

  report["retrain"]["relearn_steps"] = relearn(retrained)
  report["original"]["relearn_steps"] = relearn(original)
  context = {"init_fn": init, "apply_fn": apply,
             "holdout": holdout_for(forget_ds, test, by_class=forgotten_classes is not None)}
  for done, name in enumerate(methods, start=3):
    method = methods_lib.get(name)
    description = method.describe()
    log(f"{name}: {description}")
    needs = {k: context[k] for k in method.needs}
    params, first, steady = _timed(lambda: method(loss, original, forget=forget_ds, retain=retain_ds, seed=seed,
                                                  **needs))
    row, _ = evaluate(params, first, steady, retrain_forget_logits)
    row["description"] = description
    row["relearn_steps"] = relearn(params)
    report["methods"][name] = row
    tick(name, done)
  report["test_size"] = int(len(test))
  report["retain_size"] = int(len(retain_ds))
  report["train_size"] = int(len(train))
  return report
