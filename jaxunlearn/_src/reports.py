"""What the ``demo``, ``score`` and ``methods`` commands print and write: rich tables, JSON, PNG.
(``cli.py`` parses the arguments and dispatches here.)"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import numpy as np


@contextlib.contextmanager
def progress_bar(console, description: str):
  """A transient rich progress bar; yields ``update(stage, done, total)``."""
  from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

  with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, transient=True) as progress:
    task = progress.add_task(description, total=None)

    def update(stage: str, done: int, total: int) -> None:
      progress.update(task, description=f"{description} ({stage})", completed=done, total=total)

    yield update


def run_methods(args) -> int:
  from rich.table import Table

  from jaxunlearn._src import methods as methods_lib

  for task in methods_lib.TASKS:
    table = Table(title=f"{task} unlearning methods (jaxunlearn.methods, task={task!r})")
    for col in ("method", "what it does", "defaults", "N models (score)", "reference"):
      table.add_column(col, no_wrap=col == "method")
    for name, m in methods_lib.all_methods(task=task).items():
      table.add_row(name, m.summary, ", ".join(f"{k}={v!r}" for k, v in m.defaults.items()),
                    "n/a" if task != "classification" else "one program" if m.unlearn_many is not None else
                    "one by one", m.citation)
    _console().print(table)
  return 0


def run_demo(args) -> int:
  from rich.table import Table

  from jaxunlearn._src import demo
  from jaxunlearn._src import methods as methods_lib

  console = _console()
  methods = methods_lib.parse(args.methods)
  if getattr(args, "corrupt", None):
    return _run_corrective(console, args, methods)
  console.print(
      f"[bold]jaxunlearn demo[/bold]: dataset={args.dataset} model={args.model} forget={args.forget} seed={args.seed}"
  )
  start = time.perf_counter()
  with progress_bar(console, "demo") as bar:
    report = demo.run(
        dataset=args.dataset,
        forget=args.forget,
        methods=methods,
        model=args.model,
        seed=args.seed,
        epochs=args.epochs,
        data_dir=args.data_dir,
        log=lambda msg: console.print(f"  {msg}", style="dim"),
        progress=bar,
    )
  table = Table(title=f"Unlearning on {args.dataset}: forget {args.forget} ({report['forget_size']} examples)")
  by_class = report["original"].get("test_forgotten_classes_acc") is not None
  for col in ("method", "forget acc", "retain acc", "test acc") + (("test acc, forgotten classes",) if by_class else ()) + (
      "MIA AUC", "JS to retrained", "seconds", "compile s", "speed-up vs retrain", "relearn steps"):
    table.add_column(col, justify="left" if col == "method" else "right", no_wrap=col == "method")
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
        *((f"{row['test_forgotten_classes_acc']:.3f}",) if by_class else ()),
        f"{row['mia_auc']:.3f}",
        f"{row['js_to_retrain']:.4f}",
        f"{row['seconds']:.2f}",
        f"{row['compile_seconds']:.2f}",
        speedup,
        "-" if row.get("relearn_steps", 0) is None else str(row.get("relearn_steps", "")),
    )
  console.print(table)
  console.print(f"total {time.perf_counter() - start:.1f} s. Seconds: steady state (second run); compile s: first run minus second. MIA AUC: loss-threshold attack, forget vs test; compare with the retrained model's value, the target (0.5 only when the forget set is distributed like the test set, as with random forgetting; far below 0.5 when whole classes are forgotten, since the retrained model has never seen them). JS: Jensen-Shannon (base 2) to the retrained model on the forget set. Relearn steps: Adam steps on the forget set until its accuracy is back to the original's ('-': not within 100).")
  _write_outputs(console, report, args, "demo_plot")
  return 0


def _run_corrective(console, args, methods) -> int:
  from rich.table import Table

  from jaxunlearn._src import corrective_demo

  if args.sisa_shards < 0:
    raise ValueError(f"--sisa-shards must be >= 0, got {args.sisa_shards}.")
  console.print(f"[bold]jaxunlearn demo[/bold] (corrective): dataset={args.dataset} model={args.model} "
                f"corrupt={args.corrupt} detector={args.detector} seed={args.seed}")
  start = time.perf_counter()
  with progress_bar(console, "demo") as bar:
    report = corrective_demo.run(corrupt=args.corrupt, dataset=args.dataset, methods=methods, model=args.model,
                                 seed=args.seed, epochs=args.epochs, detector=args.detector,
                                 sisa_shards=args.sisa_shards, data_dir=args.data_dir,
                                 log=lambda msg: console.print(f"  {msg}", style="dim"), progress=bar)
  det = Table(title=f"Detection: {report['corrupted']} of {report['train_size']} training examples corrupted "
                    f"({args.corrupt})")
  for col in ("detector / features", "flagged", "precision", "recall", "seconds"):
    det.add_column(col, justify="left" if col.startswith("detector") else "right")
  for name, row in report["detection"].items():
    mark = " (unlearned)" if name == report["detector"] else ""
    det.add_row(name + mark, str(row["flagged"]), f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                f"{row['seconds']:.2f}")
  console.print(det)
  backdoor = report["kind"] == "backdoor"
  cols = ("attack success",) if backdoor else ("keeps corrupted label", "true label (corrupted examples)")
  table = Table(title=f"Unlearning the {report['flagged']} flagged examples ({report['detector']})")
  for col in ("method", "clean test acc", *cols, "seconds", "compile s"):
    table.add_column(col, justify="left" if col == "method" else "right", no_wrap=col == "method")
  for name, row in list(report["references"].items()) + list(report["methods"].items()):
    vals = (row["attack_success"],) if backdoor else (row["corrupt_label_agreement"], row["true_label_acc"])
    secs = "" if row["seconds"] is None else f"{row['seconds']:.2f}"
    comp = "" if row["compile_seconds"] is None else f"{row['compile_seconds']:.2f}"
    table.add_row(name, f"{row['test_acc']:.3f}", *(f"{v:.3f}" for v in vals), secs, comp)
  console.print(table)
  what = ("attack success: triggered test inputs of the other classes classified as the target class" if backdoor
          else "keeps corrupted label / true label: the corrupted training examples' predictions")
  console.print(f"total {time.perf_counter() - start:.1f} s. clean_retrain: retrained without every corrupted "
                f"example (the target); retrain_flagged: retrained without the flagged ones (exact unlearning of "
                f"what was detected); {what}.")
  if args.json_path:
    with open(args.json_path, "w") as f:
      json.dump(report, f, indent=1)
    console.print(f"wrote {args.json_path}")
  if args.plot_path:
    from jaxunlearn._src import plot

    plot.corrective_plot(report, args.plot_path)
    console.print(f"wrote {args.plot_path}")
  return 0


def _console():
  from rich.console import Console

  # Wide enough for the tables when the output is piped (rich falls back to 80 columns there).
  return Console() if sys.stdout.isatty() else Console(width=150)


def _write_outputs(console, report: dict, args, plot_name: str) -> None:
  import jax

  if jax.process_index() != 0:
    return  # several processes: each holds the same report; process 0 writes the files
  if args.json_path:
    with open(args.json_path, "w") as f:
      json.dump(report, f, indent=2)
    console.print(f"wrote {args.json_path}")
  if args.plot_path:
    from jaxunlearn._src import plot

    getattr(plot, plot_name)(report, args.plot_path)
    console.print(f"wrote {args.plot_path}")


def run_score(args) -> int:
  from rich.table import Table

  from jaxunlearn._src import methods as methods_lib
  from jaxunlearn._src import score

  console = _console()
  methods = methods_lib.parse(args.methods)
  console.print(
      f"[bold]jaxunlearn score[/bold]: dataset={args.dataset} model={args.model} forget={args.forget} "
      f"models={args.models} seed={args.seed}"
  )
  start = time.perf_counter()
  with progress_bar(console, "score") as bar:
    report = score.run(
        dataset=args.dataset, forget=args.forget, methods=methods, n_models=args.models, model=args.model,
        seed=args.seed, epochs=args.epochs, strategy=args.strategy, data_dir=args.data_dir,
        log=lambda msg: console.print(f"  {msg}", style="dim"), progress=bar,
    )
  table = Table(title=f"NeurIPS 2023 score, {args.models} models per method: forget {args.forget} "
                      f"({report['forget_size']} examples)")
  for col in ("method", "score", "share of gap", "forget quality", "median eps", "forget acc", "retain acc", "test acc",
              "seconds (N models, with compile)"):
    table.add_column(col, justify="left" if col == "method" else "right", no_wrap=col == "method")
  rows = [("retrain", report["retrain"]), ("original", report["original"])] + (
      [("retrain ceiling", report["retrain_ceiling"])] if "retrain_ceiling" in report else []) + list(
      report["methods"].items())
  for name, row in rows:
    scored = "epsilon" in row
    table.add_row(
        name,
        f"{row['score']:.4f}" if scored else "(reference)",
        "" if row.get("gap_share") is None else f"{row['gap_share']:.2f}",
        f"{row['forget_quality']:.4f}" if scored else "",
        f"{float(np.median(row['epsilon'])):.2f}" if scored else "",
        f"{row['forget_acc']:.3f}", f"{row['retain_acc']:.3f}", f"{row['test_acc']:.3f}", f"{row['seconds']:.1f}",
    )
  console.print(table)
  hist = Table(title="epsilon per forget example (count per bin)")
  hist.add_column("method", no_wrap=True)
  bins = score.histogram(report["original"]["epsilon"])
  for label, _ in bins:
    hist.add_column(label, justify="right")
  for name, row in rows[1:]:
    hist.add_row(name, *[str(c) for _, c in score.histogram(row["epsilon"])])
  console.print(hist)
  console.print(f"total {time.perf_counter() - start:.1f} s. Score = forget quality x (retain acc / retrained's) x (test acc / retrained's); higher is better. 'original' is the models before unlearning (the floor); 'retrain ceiling' is N more retrained models (other seeds) scored against the first N; share of gap: (score - floor) / (ceiling - floor).")
  _write_outputs(console, report, args, "score_plot")
  return 0


def run_lm_demo(args) -> int:
  from rich.table import Table

  from jaxunlearn._src import lm_demo
  from jaxunlearn._src import methods as methods_lib

  console = _console()
  methods = methods_lib.parse(args.methods, task="lm")
  cache = None if args.no_cache else (args.cache_dir or lm_demo.default_cache_dir())
  console.print(f"[bold]jaxunlearn lm demo[/bold]: world={args.world} split={args.forget} seed={args.seed} "
                f"cache={cache or 'off'}")
  start = time.perf_counter()
  with progress_bar(console, "lm demo") as bar:
    report = lm_demo.run(split=args.forget, methods=methods, world=args.world, seed=args.seed, cache_dir=cache,
                         relearn=args.relearn, select=methods_lib.parse(args.select, task="lm") if args.select else [],
                         log=lambda msg: console.print(f"  {msg}", style="dim"), progress=bar)
  table = Table(title=f"Language-model unlearning on the generated TOFU-like world: {args.forget} "
                      f"({report['forget_authors']} of {report['authors']} authors)")
  for col in ("model", "forget quality", "model utility", "forget truth ratio", "forget ROUGE-L", "privleak %",
              "extraction strength") + (("relearn steps",) if args.relearn else ()) + ("seconds", "tokens/s"):
    table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
  for name, row in [("target", report["target"]), ("retain", report["retain"])] + list(report["methods"].items()):
    relearned = () if not args.relearn else ("> 40" if row["relearn_steps"] is None else str(row["relearn_steps"]),)
    table.add_row(name, f"{row['forget_quality']:.3g}", f"{row['model_utility']:.3f}",
                  f"{row['forget_truth_ratio']:.3f}", f"{row['forget_rouge']:.3f}", f"{row['privleak']:.1f}",
                  f"{row['extraction_strength']:.3f}", *relearned, f"{row['seconds']:.1f}",
                  "" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:,.0f}")
  console.print(table)
  console.print(f"total {time.perf_counter() - start:.1f} s. Forget quality: KS p-value of the forget truth ratios "
                "against the retain model's (1 = indistinguishable). Model utility: harmonic mean of probability, "
                "ROUGE-L and truth ratio on retain authors, famous authors and place facts. Privleak: Min-K% (k=0.4) "
                "AUC forget vs holdout, relative to the retain model's (0 = as the retain model). Seconds of the "
                "target and retain rows: their fine-tuning (0 when reused from the cache); of methods: unlearning, "
                "compilation included.")
  _write_outputs(console, report, args, "lm_plot")
  return 0
