"""Corrective unlearning (``jaxunlearn demo --corrupt``): detection precision and recall, and what
unlearning the flagged examples does to a backdoor and to label noise, against the clean retrain.

    python benchmarks/corrective.py          # writes benchmarks/results/corrective.{json,md}

For each corruption (a 2x2 trigger patch relabelled to class 0 on 5 % of digits; 10 % of the
labels flipped) and seed (0, 1, 2: which examples are corrupted, and the training seed), the
job of ``jaxunlearn demo --corrupt`` runs with every registry method at its defaults and a SISA
ensemble of 8 shards: train on the corrupted data (reference MLP, 20 epochs), detect with
Isolation Forest / LOF on the inputs or on the model's penultimate features + per-example loss,
unlearn the ids flagged by Isolation Forest on the inputs.

Target (issue 16): the best method brings the attack success rate to <= 5 % with clean test
accuracy within 2 points of the clean retrain. "meets" counts the seeds where a method does.

Tuned rows (backdoor only): a small grid per promising method; the setting is chosen on one half
of the test set (the highest clean accuracy among settings with attack success <= 5 %, else the
lowest attack success) and reported on the other half. Choosing needs triggered inputs: a
defender who knows the trigger, which the untuned rows do not assume.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402

from jaxunlearn._src import corrective_demo, selection  # noqa: E402

SEEDS = (0, 1, 2)
CORRUPTIONS = ("backdoor:0.05", "labelflip:0.1")
GRID = {
    "aru": {"fraction": [0.05, 0.1], "epochs": [3, 5, 10]},
    "bad_teacher": {"epochs": [5, 10, 15]},
    "random_label": {"epochs": [3, 5, 10]},
    "salun": {"fraction": [0.5, 0.8], "epochs": [5, 10]},
    "scrub": {"learning_rate": [1e-3, 3e-3], "epochs": [5, 10]},
}


def _halves(test):
  first = np.arange(len(test)) % 2 == 0
  pick = lambda m: dataclasses.replace(test, x=test.x[m], y=test.y[m], ids=test.ids[m])  # noqa: E731
  return pick(first), pick(~first)


def tuned(seed: int) -> dict:
  job = corrective_demo.prepare(corrupt="backdoor:0.05", seed=seed)
  val, rep = _halves(job.test)
  clean = job.fit(selection.split_forget(job.train, job.bad_ids)[1])
  out = {"clean_retrain": {"val": job.evaluate(clean, val), "report": job.evaluate(clean, rep)}, "methods": {}}
  for name, grid in GRID.items():
    tried = []
    for values in itertools.product(*grid.values()):
      setting = dict(zip(grid, values))
      params = job.unlearn(name, **setting)
      tried.append((setting, job.evaluate(params, val), job.evaluate(params, rep)))
    ok = [t for t in tried if t[1]["attack_success"] <= 0.05]
    best = max(ok, key=lambda t: t[1]["test_acc"]) if ok else min(tried, key=lambda t: t[1]["attack_success"])
    out["methods"][name] = {"setting": best[0], "val": best[1], "report": best[2],
                            "tried": [(s, v, r) for s, v, r in tried]}
    print(seed, name, best[0], best[2], flush=True)
  return out


def main() -> None:
  runs = {c: [corrective_demo.run(corrupt=c, seed=s, sisa_shards=8, log=print) for s in SEEDS] for c in CORRUPTIONS}
  tune = [tuned(s) for s in SEEDS]
  m = _common.machine()
  lines = ["# Corrective unlearning (`benchmarks/corrective.py`)", "", _common.machine_line(m), "",
           "digits, reference MLP (20 epochs, Adam 1e-3), seeds 0, 1, 2 (mean, with min-max over seeds); seconds "
           "are steady state (second run). See the script's docstring for the protocol.", ""]
  for corrupt, reports in runs.items():
    backdoor = reports[0]["kind"] == "backdoor"
    lines += [f"## {corrupt} ({reports[0]['corrupted']} of {reports[0]['train_size']} training examples)", "",
              "### Detection", "", "| detector / features | flagged | precision | recall |", "|---|---|---|---|"]
    for det in corrective_demo.DETECTORS:
      rows = [r["detection"][det] for r in reports]
      lines.append(f"| {det}{' (unlearned)' if det == reports[0]['detector'] else ''} | "
                   f"{np.mean([r['flagged'] for r in rows]):.0f} | {_spread([r['precision'] for r in rows])} | "
                   f"{_spread([r['recall'] for r in rows])} |")
    effect = "attack success" if backdoor else "keeps corrupted label"
    key = "attack_success" if backdoor else "corrupt_label_agreement"
    lines += ["", "### Unlearning the flagged examples", "",
              f"| model | clean test acc | {effect} | " + ("meets the target | " if backdoor else
                                                             "true label (corrupted examples) | ") + "seconds |",
              "|---|---|---|---|---|"]
    names = list(reports[0]["references"]) + list(reports[0]["methods"])
    for name in names:
      rows = [{**r["references"], **r["methods"]}[name] for r in reports]
      clean = [r["references"]["clean_retrain"]["test_acc"] for r in reports]
      if backdoor:
        meets = sum(row["attack_success"] <= 0.05 and row["test_acc"] >= c - 0.02 for row, c in zip(rows, clean))
        extra = f"{meets}/{len(rows)}"
      else:
        extra = _spread([row["true_label_acc"] for row in rows])
      secs = [row["seconds"] for row in rows if row["seconds"] is not None]
      lines.append(f"| {name} | {_spread([row['test_acc'] for row in rows])} | {_spread([row[key] for row in rows])} | "
                   f"{extra} | {np.mean(secs):.2f} |" if secs else
                   f"| {name} | {_spread([row['test_acc'] for row in rows])} | {_spread([row[key] for row in rows])} | "
                   f"{extra} | - |")
    lines.append("")
  lines += ["## backdoor:0.05, tuned on half the test set, reported on the other half", "",
            "| method | settings chosen (seed 0, 1, 2) | clean test acc | attack success | meets the target |",
            "|---|---|---|---|---|"]
  clean = [t["clean_retrain"]["report"]["test_acc"] for t in tune]
  lines.append(f"| clean_retrain | | {_spread(clean)} | "
               f"{_spread([t['clean_retrain']['report']['attack_success'] for t in tune])} | |")
  for name in GRID:
    rows = [t["methods"][name] for t in tune]
    meets = sum(r["report"]["attack_success"] <= 0.05 and r["report"]["test_acc"] >= c - 0.02
                for r, c in zip(rows, clean))
    settings = "; ".join(", ".join(f"{k}={v:g}" for k, v in r["setting"].items()) for r in rows)
    lines.append(f"| {name} | {settings} | {_spread([r['report']['test_acc'] for r in rows])} | "
                 f"{_spread([r['report']['attack_success'] for r in rows])} | {meets}/{len(rows)} |")
  lines.append("")
  for r in runs.values():
    for rep in r:
      for det in rep["detection"].values():
        det.pop("ids")
  _common.write("corrective", {"machine": m, "runs": runs, "tuned": tune}, "\n".join(lines))


def _spread(values) -> str:
  v = np.asarray(values, float)
  return f"{v.mean():.3f} ({v.min():.3f}-{v.max():.3f})"


if __name__ == "__main__":
  main()
