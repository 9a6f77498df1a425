"""The ``jaxunlearn`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence


def _demo_parser(sub) -> None:
  p = sub.add_parser(
      "demo",
      help="train, forget, retrain and compare every method on an embedded dataset",
      description=(
          "Trains the original model, retrains the gold-standard model without the forget set, "
          "runs each unlearning method and prints forget/retain/test accuracy and time."
      ),
  )
  p.add_argument("--dataset", default="digits", help="digits (default), mnist1d, mnist1d:N or tfds:NAME")
  p.add_argument("--forget", default="class:3", help="class:K[,K..] | random:FRACTION | ids:FILE (default class:3)")
  p.add_argument("--methods", default="all", help="comma-separated methods, or 'all'")
  p.add_argument("--model", default="mlp", help="mlp (default) or cnn")
  p.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffling and selection")
  p.add_argument("--epochs", type=int, default=20, help="epochs of original training and of retraining")
  p.add_argument("--data-dir", default=None, help="TFDS data directory (tfds: datasets only)")
  p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON to this path")


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of the ``jaxunlearn`` console script."""
  parser = argparse.ArgumentParser(prog="jaxunlearn", description="Machine unlearning for JAX and Flax.")
  sub = parser.add_subparsers(dest="command", required=True)
  _demo_parser(sub)
  args = parser.parse_args(argv)
  try:
    if args.command == "demo":
      return _run_demo(args)
  except ValueError as err:
    print(f"jaxunlearn {args.command}: error: {err}", file=sys.stderr)
    return 2
  except FileNotFoundError as err:
    print(f"jaxunlearn {args.command}: error: {err}", file=sys.stderr)
    return 2
  parser.error(f"unknown command {args.command!r}")
  return 2


def _run_demo(args) -> int:
  from rich.console import Console
  from rich.table import Table

  from jaxunlearn._src import demo

  console = Console()
  methods = demo.parse_methods(args.methods)
  console.print(
      f"[bold]jaxunlearn demo[/bold]: dataset={args.dataset} model={args.model} forget={args.forget} seed={args.seed}"
  )
  start = time.perf_counter()
  report = demo.run(
      dataset=args.dataset,
      forget=args.forget,
      methods=methods,
      model=args.model,
      seed=args.seed,
      epochs=args.epochs,
      data_dir=args.data_dir,
      log=lambda msg: console.print(f"  {msg}", style="dim"),
  )
  table = Table(title=f"Unlearning on {args.dataset}: forget {args.forget} ({report['forget_size']} examples)")
  for col in ("method", "forget acc", "retain acc", "test acc", "MIA AUC", "JS to retrained", "seconds",
              "compile s", "speed-up vs retrain"):
    table.add_column(col, justify="left" if col == "method" else "right")
  retrain_s = report["retrain"]["seconds"]
  for name, row in [("original", report["original"]), ("retrain", report["retrain"])] + list(
      report["methods"].items()
  ):
    speedup = "" if name == "original" else f"{retrain_s / max(row['seconds'], 1e-9):.1f}x"
    table.add_row(
        name,
        f"{row['forget_acc']:.3f}",
        f"{row['retain_acc']:.3f}",
        f"{row['test_acc']:.3f}",
        f"{row['mia_auc']:.3f}",
        f"{row['js_to_retrain']:.4f}",
        f"{row['seconds']:.2f}",
        f"{row['compile_seconds']:.2f}",
        speedup,
    )
  console.print(table)
  console.print(f"total {time.perf_counter() - start:.1f} s. Seconds: steady state (second run); compile s: first run minus second. MIA AUC: loss-threshold attack, forget vs test (0.5 = indistinguishable). JS: Jensen-Shannon (base 2) to the retrained model on the forget set.")
  if args.json_path:
    with open(args.json_path, "w") as f:
      json.dump(report, f, indent=2)
    console.print(f"wrote {args.json_path}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
