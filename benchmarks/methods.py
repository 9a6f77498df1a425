"""Every classification method of the registry, side by side against retraining: digits and
MNIST-1D, forgetting class 3 and a random 10%.

    python benchmarks/methods.py                 # writes benchmarks/results/methods.{json,md}
    python benchmarks/methods.py --models 8 --datasets digits --forgets random:0.1   # a quicker look

Per dataset and forget set: ``jaxunlearn demo`` (one model: forget/retain/test accuracy, MIA AUC,
JS divergence to the retrained model on the forget set, relearn steps, steady-state seconds and
compile seconds, each method run twice) and ``jaxunlearn score`` with N models (NeurIPS 2023
score, the retrain ceiling and each method's share of the gap from the untouched original to it).
The targets of issue 15 are checked in the table's last column.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402

from jaxunlearn._src import demo, score  # noqa: E402
from jaxunlearn._src import methods as methods_lib  # noqa: E402


# The knobs that trade forgetting against retention, searched when a default misses the class
# target on a dataset (a method not listed is searched over its learning rate).
GRIDS = {
    "finetune": {"epochs": [3, 10, 20]},
    "gradient_ascent": {"learning_rate": [2e-3, 5e-3, 1e-2, 2e-2, 5e-2], "epochs": [1, 3]},
    "gradient_difference": {"learning_rate": [1e-4, 2e-4, 4e-4, 1e-3], "epochs": [1, 3]},
    "ssd": {"alpha_scale": [0.2, 0.3, 0.5, 0.7], "dampening": [1.0, 0.1]},
    "reset_repair": {"epochs": [5, 10, 20]},
    "random_label": {"epochs": [2, 5, 10]},
    "kl_ascent": {"kl_weight": [5.0, 10.0, 20.0], "epochs": [3, 7, 15]},
    "prune_finetune": {"sparsity": [0.7, 0.8, 0.9], "epochs": [10, 20]},
    "l1_sparse": {"alpha": [5e-3, 1e-2, 2e-2], "epochs": [5, 10]},
    "noise_finetune": {"sensitivity": [0.02, 0.03, 0.05], "epochs": [10, 20]},
    "fisher_forgetting": {"alpha": [1e-9, 3e-9, 1e-8, 3e-8, 1e-7], "max_variance": [0.1, 1.0]},
    "scrub": {"learning_rate": [5e-4, 1e-3, 2e-3], "epochs": [5, 10]},
    "scrub_r": {"learning_rate": [5e-4, 1e-3, 2e-3], "epochs": [5, 10]},
    "salun": {"fraction": [0.3, 0.5, 0.8], "epochs": [5, 10]},
    "bad_teacher": {"learning_rate": [3e-4, 1e-3, 3e-3], "epochs": [3, 5, 10]},
    "amun": {"learning_rate": [1e-3, 3e-3], "epochs": [5, 20]},
    "aru": {"fraction": [0.05, 0.1, 0.2], "epochs": [5, 10]},
}


def search(dataset: str, names: list[str]) -> dict:
  """For each of ``names``, every setting of its grid on ``dataset``, class 3 forgotten (seed 0):
  ``{name: [(setting, forget acc, retain acc), ...]}`` and the retrained model's retain accuracy."""
  import itertools

  import optax

  from jaxunlearn._src import training

  train, test, f, r, apply, p0, init, loss = demo.prepare(dataset=dataset, forget="class:3", model="mlp", seed=0,
                                                          data_dir=None)
  opt = optax.adam(1e-3)
  original = training.fit(loss, p0, train, optimizer=opt, epochs=20, batch_size=128, seed=0)
  retrained = training.fit(loss, p0, r, optimizer=opt, epochs=20, batch_size=128, seed=0)
  context = {"init_fn": init, "apply_fn": apply, "holdout": demo.holdout_for(f, test, by_class=True)}
  out = {"retrain_retain_acc": training.dataset_accuracy(apply, retrained, r), "methods": {}}
  for name in names:
    m = methods_lib.get(name)
    grid = GRIDS.get(name, {"learning_rate": [m.defaults.get("learning_rate", 1e-3) * k for k in (0.3, 1, 3)]})
    rows = []
    for values in itertools.product(*grid.values()):
      setting = dict(zip(grid, values))
      params = m(loss, original, forget=f, retain=r, seed=0, **{k: context[k] for k in m.needs}, **setting)
      rows.append((setting, training.dataset_accuracy(apply, params, f), training.dataset_accuracy(apply, params, r)))
      print(dataset, name, rows[-1], flush=True)
    out["methods"][name] = rows
  return out


def _best(rows, retrain_retain):
  """The setting meeting the class target with the best retain accuracy, else the one nearest to it."""
  def miss(row):
    return max(row[1] - 0.05, retrain_retain - 0.03 - row[2], 0.0)
  return min(rows, key=lambda row: (miss(row), -row[2]))


def search_table(report: dict) -> str:
  out = ["\n### Class 3: where a default misses the target, the best setting found\n",
         "The grid searched per method is `GRIDS` in `benchmarks/methods.py` (one model, seed 0, as the demo); the "
         "setting shown meets the target with the best retain accuracy, or, where none does, comes nearest to it "
         "(the larger of its two shortfalls is smallest). A default is one setting for both datasets; the searched "
         "setting is per dataset.\n",
         "| dataset | method | default: forget / retain acc | best setting found | forget acc | retain acc | "
         "retrained retain acc | meets |", "|---|---|---|---|---|---|---|---|"]
  for dataset, found in report.get("search", {}).items():
    demo_row = report["runs"][f"{dataset}, class:3"]["demo"]
    rr = found["retrain_retain_acc"]
    for name, rows in found["methods"].items():
      setting, fa, ra = _best(rows, rr)
      d = demo_row["methods"][name]
      meets = "yes" if fa <= 0.05 and ra >= rr - 0.03 else "no"
      shown = ", ".join(f"{k}={v:g}" for k, v in setting.items())
      out.append(f"| {dataset} | {name} | {d['forget_acc']:.3f} / {d['retain_acc']:.3f} | {shown} | {fa:.3f} | "
                 f"{ra:.3f} | {rr:.3f} | {meets} |")
  return "\n".join(out)


NOTES = """### Why some methods miss the class target

- **finetune** only fine-tunes on the retain set: nothing pushes the forgotten class down but the
  softmax's normalisation. On digits even 20 epochs (a retrain's worth) leave a third of it; on
  MNIST-1D 20 epochs remove it.
- **gradient_ascent** is unbounded: between the learning rates that leave the class and those that
  collapse every class, the grid holds no setting that removes one class alone on these MLPs.
- **fisher_forgetting** is noise alone: the noise that removes the class (large variance where
  the retain set's Fisher is small) also scrambles the many parameters the retain set barely
  uses, and retain accuracy falls with it. The authors' code also zeroes the forgotten class's
  output row, a class-specific step that is not part of the method here.
- **amun** fine-tunes on the forget examples with their true labels (and their adversarial
  neighbours with wrong ones): it lowers the model's confidence on them towards that on unseen
  data, which is random forgetting's goal, and keeps them classified. It is not built to remove a
  class.
- On **MNIST-1D** the MLP memorises its training set (retain accuracy about 0.92, test about
  0.52): methods that damage the network and then repair it on the retain set must memorise it
  again, which takes more epochs than the digits-tuned defaults give (the search shows what does).
"""


def _fmt(v, spec):
  return "-" if v is None else format(v, spec)


def _verdict(forget: str, row: dict, retrain: dict) -> str:
  if not forget.startswith("class:"):
    return ""
  ok = row["forget_acc"] <= 0.05 and row["retain_acc"] >= retrain["retain_acc"] - 0.03
  return "meets" if ok else "misses"


def table(report: dict) -> str:
  out = []
  for key, entry in report["runs"].items():
    d, s = entry["demo"], entry["score"]
    out += [f"\n### {key}: forget {d['forget_size']} of {d['train_size']} examples, N = {s['models']} "
            f"({entry['seconds']:.0f} s)\n",
            "| method | forget acc | retain acc | test acc | MIA AUC | JS to retrained | relearn steps | NeurIPS score "
            f"(N={s['models']}) | share of gap | seconds | compile s | class target |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [("retrain", d["retrain"], s["retrain_ceiling"]), ("original", d["original"], s["original"])]
    rows += [(m, d["methods"][m], s["methods"][m]) for m in d["methods"]]
    for name, r, sc in rows:
      verdict = _verdict(d["forget"], r, d["retrain"]) if name not in ("retrain", "original") else ""
      out.append(
          f"| {name} | {r['forget_acc']:.3f} | {r['retain_acc']:.3f} | {r['test_acc']:.3f} | {r['mia_auc']:.3f} | "
          f"{r['js_to_retrain']:.3f} | {'>100' if r['relearn_steps'] is None else r['relearn_steps']} | "
          f"{sc['score']:.3f} | {_fmt(sc.get('gap_share'), '.2f')} | {r['seconds']:.2f} | "
          f"{r['compile_seconds']:.2f} | {verdict} |")
  return "\n".join(out)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--models", type=int, default=32)
  ap.add_argument("--datasets", default="digits,mnist1d")
  ap.add_argument("--forgets", default="class:3,random:0.1")
  ap.add_argument("--methods", default="all")
  ap.add_argument("--name", default="methods")
  ap.add_argument("--append", action="store_true", help="keep the runs already in the results file, add these")
  ap.add_argument("--no-search", action="store_true", help="skip the search for settings where a default misses")
  ap.add_argument("--render", action="store_true", help="only write the markdown again from the results file")
  args = ap.parse_args()
  if args.render:
    with open(os.path.join(_common.RESULTS, f"{args.name}.json")) as f:
      _write(args.name, json.load(f))
    return
  names = methods_lib.parse(args.methods)
  path = os.path.join(_common.RESULTS, f"{args.name}.json")
  report = {"machine": _common.machine(), "runs": {}}
  if args.append and os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    report["runs"], report["search"] = old["runs"], old.get("search", {})
  for dataset in args.datasets.split(","):
    for forget in args.forgets.split(","):
      key = f"{dataset}, {forget}"
      t0 = time.perf_counter()
      d = demo.run(dataset=dataset, forget=forget, methods=names, log=print)
      s = score.run(dataset=dataset, forget=forget, methods=names, n_models=args.models, log=print)
      report["runs"][key] = {"demo": d, "score": s, "seconds": time.perf_counter() - t0}
      print(f"{key}: {time.perf_counter() - t0:.0f} s", flush=True)
      _write(args.name, report)
    if "class:3" in args.forgets.split(",") and not args.no_search:
      d = report["runs"][f"{dataset}, class:3"]["demo"]
      missing = [m for m in names if _verdict("class:3", d["methods"][m], d["retrain"]) == "misses"]
      report.setdefault("search", {})[dataset] = search(dataset, missing)
      _write(args.name, report)


def _write(name: str, report: dict) -> None:
  md = ["# Every classification method against retraining (`benchmarks/methods.py`)", "",
        _common.machine_line(report["machine"]), "",
        "One MLP (64-256-256-10 on digits, its MNIST-1D counterpart), trained 20 epochs with Adam; every method at "
        "its registry default (`jaxunlearn methods`). Accuracies, MIA AUC (loss threshold, forget vs test), JS "
        "(Jensen-Shannon to the retrained model on the forget set), relearn steps (Adam steps on the forget set "
        "until its accuracy is back to the original's), seconds (steady state) and compile seconds (first run minus "
        "second) come from `jaxunlearn demo` (seed 0). The NeurIPS score comes from `jaxunlearn score` with N models "
        "per method; its 'retrain' row is the retrain ceiling (N more retrained models, other seeds, scored against "
        "the first N) and 'original' the untouched models (the floor); share of gap = (score - floor) / (ceiling - "
        "floor). Class target (issue 15): forget accuracy <= 0.05 with retain accuracy within 3 points of the "
        "retrained model's. Each block names its N; seconds are of the run that wrote it. Compile seconds are 0 "
        "where an earlier block of the same run had compiled the same shapes.", table(report),
        search_table(report), "", NOTES, ""]
  _common.write(name, report, "\n".join(md))


if __name__ == "__main__":
  main()
