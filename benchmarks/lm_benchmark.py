"""The generated TOFU-like benchmark: target, retain and every language-model method, per split.

    python benchmarks/lm_benchmark.py                      # forget10, small world
    python benchmarks/lm_benchmark.py --splits forget01,forget05,forget10

Writes ``benchmarks/results/lm.{json,md}``. The models are trained (pretrain, target, retain per
split) into a fresh temporary cache, so the training seconds are measured too. It answers: does
the benchmark discriminate (the target's forget quality is small; the retain model's ROUGE-L is
low on forget questions and high on retain questions), and where do the methods land.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
import _common  # noqa: E402

from jaxunlearn._src import lm_demo  # noqa: E402  (the job behind `jaxunlearn lm demo`)

COLUMNS = ("forget_quality", "model_utility", "forget_truth_ratio", "forget_rouge", "retain_rouge", "privleak",
           "extraction_strength", "relearn_steps", "steps", "seconds", "tokens_per_s")


def _fmt(key, v):
  if v is None:
    return "> 40" if key == "relearn_steps" else ""
  if key in ("relearn_steps", "steps"):
    return str(v)
  if key == "forget_quality":
    return f"{v:.3g}"
  if key == "tokens_per_s":
    return f"{v:,.0f}"
  if key in ("seconds", "privleak"):
    return f"{v:.1f}"
  return f"{v:.3f}"


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--splits", default="forget10")
  p.add_argument("--world", default="small", choices=("tiny", "small", "large"))
  p.add_argument("--select", default="gradient_ascent,gradient_difference,npo",
                 help="methods also run with checkpoint selection (rows NAME+select); '' for none")
  p.add_argument("--render", action="store_true", help="rewrite lm.md from lm.json without running anything")
  args = p.parse_args()
  if args.render:
    with open(os.path.join(_common.RESULTS, "lm.json")) as f:
      payload = json.load(f)
    _common.write("lm", payload, render(payload["machine"], payload["reports"], payload["command"]))
    return
  m = _common.machine()
  reports = {}
  with tempfile.TemporaryDirectory() as cache:
    for split in args.splits.split(","):
      t0 = time.perf_counter()
      reports[split] = lm_demo.run(split=split, world=args.world, cache_dir=cache, relearn=True, log=print,
                                   select=args.select.split(",") if args.select else [])
      reports[split]["total_seconds"] = time.perf_counter() - t0
  command = f"python benchmarks/lm_benchmark.py --splits {args.splits} --world {args.world} --select {args.select}"
  _common.write("lm", {"machine": m, "reports": reports, "command": command}, render(m, reports, command))


def _demo_share(r: dict) -> str:
  """What `jaxunlearn lm demo` (no attack, no +select rows) would have taken of this run."""
  if "relearn_seconds" not in r:
    return ""
  extra = r["relearn_seconds"] + sum(row["seconds"] + row.get("evaluation_seconds", 0.0)
                                     for name, row in r["methods"].items() if name.endswith("+select"))
  return (f", of which the relearning attack {r['relearn_seconds']:.0f} s and the +select rows "
          f"{extra - r['relearn_seconds']:.0f} s: `jaxunlearn lm demo` itself about {r['total_seconds'] - extra:.0f} s")


def render(m: dict, reports: dict, command: str) -> str:
  lines = ["# Language-model unlearning on the generated TOFU-like world", "",
           _common.machine_line(m), "",
           f"`{command}` (the job of `jaxunlearn lm demo`, models trained from scratch into a fresh cache).", ""]
  for split, r in reports.items():
    lines += [f"## {split}: {r['forget_authors']} of {r['authors']} authors forgotten",
              "", f"Model: reference decoder, d_model {r['model']['d_model']}, {r['model']['n_layers']} layers, "
              f"{r['model']['parameters']:,} parameters. Training seconds: "
              + ", ".join(f"{k} {v['seconds']:.0f}" for k, v in r["training"].items())
              + f"; whole run {r['total_seconds']:.0f} s" + _demo_share(r) + ".", "",
              "| model | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in [("target", r["target"]), ("retain", r["retain"])] + list(r["methods"].items()):
      cells = [_fmt(k, row[k]) if k in row else "" for k in COLUMNS]
      if name.endswith("+select"):  # checkpoint selection: the step whose parameters were kept
        cells[COLUMNS.index("steps")] = f"{row['selected_step']} of {row['steps']}"
      elif "stopped_at" in row:  # a stopping rule (knowledge unlearning)
        cells[COLUMNS.index("steps")] = f"{row['steps']} (rule {'held' if row['stopped_at'] is not None else 'not met'})"
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "A greedy answer of each model to the first forget question "
              f"({r['target']['sample']['question']!r}, truth {r['target']['sample']['answer']!r}):", ""]
    for name, row in [("target", r["target"]), ("retain", r["retain"])] + list(r["methods"].items()):
      lines.append(f"- {name}: {row['sample']['generated']!r}")
    t, k = r["target"], r["retain"]
    lines += ["", f"Does the benchmark discriminate? The target's forget quality is {t['forget_quality']:.2g} (a KS "
              "test tells its forget truth ratios from the retain model's); the retain model's ROUGE-L recall is "
              f"{k['forget_rouge']:.2f} on forget questions against {k['retain_rouge']:.2f} on retain questions "
              f"(the target's: {t['forget_rouge']:.2f} and {t['retain_rouge']:.2f}); the Min-K% attack tells the "
              f"target's forget authors from the holdout ones with AUC {t['mia_auc']:.2f} (the retain model: "
              f"{k['mia_auc']:.2f}).", ""]
  lines += ["forget_quality: KS-test p-value of the forget truth ratios against the retain model's. model_utility: "
            "harmonic mean of probability, ROUGE-L recall and truth ratio on 4 retain authors, the famous authors and "
            "the place facts. retain_rouge: ROUGE-L recall on those retain authors' questions. privleak: Min-K% "
            "(k = 0.4) AUC forget vs holdout relative to the retain model's, in % (MUSE; the target's -100 means "
            "its members are perfectly told apart). seconds: target/retain rows their fine-tuning, method rows the "
            "unlearning (compilation included); tokens/s: non-padding tokens through forward and backward per "
            "second of unlearning. relearn_steps: the relearning attack, AdamW steps (lr 1e-3, batch 32) of fine-tuning on the "
            "forget authors' first ten attributes until ROUGE-L on their other ten questions is back at 0.9x the "
            "target's ('> 40': not within 40 steps; a model that never learned them, like the retain model, "
            "should not get there). steps: unlearning minibatches; for NAME+select rows, the step whose parameters "
            "checkpoint selection kept (`Validation(holdout_gap(forget, validation text), every=one epoch, "
            "select=\"best\")`: the epoch whose mean forget NLL is closest to that of fictitious authors of another "
            "world, text the user holds at deletion time; never the retain model); for knowledge_unlearning, where "
            "its stopping rule (forget MA and EL_10 at or below the validation text's) stopped it.", ""]
  return "\n".join(lines)


if __name__ == "__main__":
  main()
