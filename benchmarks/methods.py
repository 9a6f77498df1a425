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
  args = ap.parse_args()
  names = methods_lib.parse(args.methods)
  path = os.path.join(_common.RESULTS, f"{args.name}.json")
  report = {"machine": _common.machine(), "runs": {}}
  if args.append and os.path.exists(path):
    with open(path) as f:
      report["runs"] = json.load(f)["runs"]
  for dataset in args.datasets.split(","):
    for forget in args.forgets.split(","):
      key = f"{dataset}, {forget}"
      t0 = time.perf_counter()
      d = demo.run(dataset=dataset, forget=forget, methods=names, log=print)
      s = score.run(dataset=dataset, forget=forget, methods=names, n_models=args.models, log=print)
      report["runs"][key] = {"demo": d, "score": s, "seconds": time.perf_counter() - t0}
      print(f"{key}: {time.perf_counter() - t0:.0f} s", flush=True)
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
        "retrained model's. Each block names its N; seconds are of the run that wrote it.", table(report), ""]
  _common.write(name, report, "\n".join(md))


if __name__ == "__main__":
  main()
