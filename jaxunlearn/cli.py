"""The ``jaxunlearn`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


class _Parser(argparse.ArgumentParser):
  """Help shows every option's default."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
    super().__init__(*args, **kwargs)


def _ids_options(p):
  """``--ids`` / ``--ids-file`` (one of them required); returns the group for more choices."""
  group = p.add_mutually_exclusive_group(required=True)
  group.add_argument("--ids", help="comma-separated ids, e.g. 3,17,42")
  group.add_argument("--ids-file", help="file with one id per line")
  return group


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
  return value


def _demo_parser(sub) -> None:
  p = sub.add_parser(
      "demo",
      help="train, forget, retrain and compare every method on an embedded dataset",
      description=(
          "Trains the original model, retrains the gold-standard model without the forget set, "
          "runs each unlearning method and prints forget/retain/test accuracy and time."
      ),
  )
  _common_options(p, forget_default="class:3", plot_help="write a PNG (accuracies and time) to this path")
  p.add_argument("--corrupt", default=None, metavar="KIND:FRACTION",
                 help="corrective unlearning instead: backdoor:FRACTION[:TARGET] (a trigger patch relabelled to "
                      "TARGET, default 0) or labelflip:FRACTION; trains on the corrupted data, detects, unlearns the "
                      "flagged ids (--forget is ignored)")
  p.add_argument("--detector", default="iforest/inputs",
                 choices=("iforest/inputs", "lof/inputs", "iforest/model", "lof/model"),
                 help="with --corrupt: whose flagged ids are unlearned (all are reported); model = the corrupted "
                      "model's penultimate features and per-example loss")
  p.add_argument("--sisa-shards", type=int, default=0, metavar="S",
                 help="with --corrupt: also train a SISA ensemble of S shards and forget the flagged ids exactly")


def _common_options(p, *, forget_default: str, plot_help: str) -> None:
  p.add_argument("--dataset", default="digits", help="digits, mnist1d, mnist1d:N or tfds:NAME")
  p.add_argument("--forget", default=forget_default,
                 help="class:K[,K..] | random:FRACTION | ids:FILE")
  p.add_argument("--methods", default="all",
                 help="comma-separated methods, or 'all' (see `jaxunlearn methods`: " + ", ".join(_method_names()) + ")")
  p.add_argument("--model", default="mlp", help="mlp or cnn")
  p.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffling and selection")
  p.add_argument("--epochs", type=_positive_int, default=20, help="epochs of original training and of retraining")
  p.add_argument("--data-dir", default=None, help="TFDS data directory (tfds: datasets only)")
  p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON to this path")
  p.add_argument("--plot", dest="plot_path", default=None, help=plot_help)


def _method_names() -> list[str]:
  from jaxunlearn._src import methods as methods_lib

  return methods_lib.names()


def _methods_parser(sub) -> None:
  sub.add_parser("methods", help="list the unlearning methods with their defaults and citations",
                 description="The method registry: what `demo --methods` and `score --methods` take.")


def _score_parser(sub) -> None:
  p = sub.add_parser(
      "score",
      help="NeurIPS 2023 unlearning score of each method with N models trained together",
      description=(
          "Trains N original and N retrained models in one compiled program each, unlearns all N "
          "originals with every method, and reports forget quality, per-example epsilon and the score."
      ),
  )
  _common_options(p, forget_default="random:0.1", plot_help="write a PNG (epsilon histograms, scores)")
  p.add_argument("--models", type=_positive_int, default=32, help="models per method, N")
  p.add_argument("--strategy", default="vmap", choices=("vmap", "sequential"),
                 help="train the N models in one vmapped program or one after another")


def _sisa_parser(sub) -> None:
  p = sub.add_parser("sisa", help="exact unlearning with SISA: train, forget, status, digest, verify",
                     description="SISA training (sharded, isolated, sliced, aggregated) with orbax checkpoints.")
  ops = p.add_subparsers(dest="op", required=True)
  t = ops.add_parser("train", help="train S shard models slice by slice into --dir")
  t.add_argument("--dir", required=True, help="directory for checkpoints, plan, manifest and ledger (must be new)")
  t.add_argument("--dataset", default="digits", help="digits, mnist1d, mnist1d:N or tfds:NAME")
  t.add_argument("--model", default="mlp", help="mlp or cnn")
  t.add_argument("--shards", type=_positive_int, default=8)
  t.add_argument("--slices", type=_positive_int, default=4)
  t.add_argument("--epochs", type=_positive_int, default=20, help="epochs per shard model (spread over the slices)")
  t.add_argument("--batch-size", type=_positive_int, default=32)
  t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
  t.add_argument("--seed", type=int, default=0)
  t.add_argument("--strategy", default="auto", choices=("auto", "vmap", "sequential"),
                 help="all shards in one vmapped program, or one after another (auto: sequential on CPU)")
  t.add_argument("--exclude-ids", default=None, help="file of ids (one per line) to leave out from the start")
  t.add_argument("--data-dir", default=None, help="TFDS data directory (tfds: datasets only)")
  f = ops.add_parser("forget", help="forget ids exactly (retrains only the affected shards and slices)")
  f.add_argument("--dir", required=True)
  _ids_options(f)
  r = ops.add_parser("repair", help="rebuild the live state from intact checkpoints, keeping every ledger deletion",
                     description="Rebuilds a missing, corrupted or outdated manifest and retrains damaged checkpoints "
                                 "from the last intact stage (from scratch if none); every id in the ledger stays "
                                 "forgotten.")
  r.add_argument("--dir", required=True)
  for writer in (t, f, r):
    writer.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="give up if another writer holds the directory's lock this long (default: wait, "
                             "saying who holds it)")
  for name, text in (("status", "plan, ledger and ensemble accuracy"),
                     ("digest", "one sha256 per shard of its final parameters, read from disk"),
                     ("verify", "check every live checkpoint on disk, retrain the affected shards from scratch "
                                "and compare bit for bit")):
    ops.add_parser(name, help=text).add_argument("--dir", required=True)


def _train_forget_parsers(sub) -> None:
  t = sub.add_parser("train", help="train a reference model and write it as an orbax checkpoint",
                     description="Trains a model on a dataset and writes it to --out (an orbax checkpoint recording "
                                 "the dataset and the model), the input of `jaxunlearn forget`.")
  t.add_argument("--dataset", default="digits", help="digits, mnist1d, mnist1d:N or tfds:NAME")
  t.add_argument("--model", default="mlp", help="mlp, cnn, or module:function returning (apply, params)")
  t.add_argument("--out", required=True, help="checkpoint directory to create (must not exist)")
  t.add_argument("--epochs", type=_positive_int, default=20)
  t.add_argument("--seed", type=int, default=0)
  t.add_argument("--data-dir", default=None, help="TFDS data directory (tfds: datasets only)")
  f = sub.add_parser("forget", help="unlearn ids from a checkpoint into a new one, with an audit record",
                     description="Restores --checkpoint (never modified), runs a registry method on the ids, writes "
                                 "the unlearned model to --out and appends an fsynced audit record to "
                                 "forget-ledger.jsonl beside it.")
  f.add_argument("--checkpoint", required=True, help="the input orbax checkpoint")
  f.add_argument("--out", required=True, help="checkpoint directory to create (must not exist)")
  f.add_argument("--method", required=True, help="a classification method (see `jaxunlearn methods`)")
  _ids_options(f)
  f.add_argument("--dataset", default=None, help="default: the checkpoint's record")
  f.add_argument("--model", default=None, help="default: the checkpoint's record (module:function for your own)")
  f.add_argument("--hyper", action="append", default=[], metavar="KEY=VALUE",
                 help="a hyper-parameter of the method (repeatable), e.g. --hyper epochs=5")
  f.add_argument("--seed", type=int, default=0)
  f.add_argument("--data-dir", default=None, help="TFDS data directory (tfds: datasets only)")


def _launch_parser(sub) -> None:
  p = sub.add_parser("launch", help="run a jaxunlearn command in N local processes (jax.distributed)",
                     description="Starts N processes of `jaxunlearn COMMAND ...` joined by a coordinator on 127.0.0.1 "
                                 "(CPU collectives over gloo), prefixes their output by process, and stops all of them "
                                 "when one fails. On TPU pods and GPU clusters, start one process per host yourself with "
                                 "JAXUNLEARN_DISTRIBUTED=1: jax.distributed.initialize() then finds the cluster.")
  p.add_argument("--processes", type=_positive_int, required=True)
  p.add_argument("--devices-per-process", type=_positive_int, default=None,
                 help="on CPU: simulated devices per process (XLA_FLAGS)")
  p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...", help="the jaxunlearn command to run")


def _knn_parser(sub) -> None:
  p = sub.add_parser("knn", help="exact kNN forgetting: build, forget, check against a rebuilt index",
                     description="A k-nearest-neighbour classifier over a dataset's flattened inputs: forgets ids "
                                 "in place and checks every test prediction and neighbour list against an index "
                                 "built without them (exit 1 on a mismatch).")
  p.add_argument("--dataset", default="digits", help="digits, mnist1d, mnist1d:N or tfds:NAME")
  p.add_argument("--forget", default="random:0.1", help="class:K[,K..] | random:FRACTION | ids:FILE")
  p.add_argument("--k", type=_positive_int, default=5, help="neighbours per query")
  p.add_argument("--seed", type=int, default=0, help="seed of the random forget set")
  p.add_argument("--data-dir", default=None, help="TFDS data directory (tfds: datasets only)")


def _certified_parser(sub) -> None:
  p = sub.add_parser("certified", help="certified removal (Guo et al. 2020): train, forget, status",
                     description="An (epsilon, delta)-certified logistic regression on a dataset's flattened inputs: "
                                 "removals are Newton steps with a tracked bound, retraining when the budget would "
                                 "be passed.")
  ops = p.add_subparsers(dest="op", required=True, parser_class=_Parser)
  t = ops.add_parser("train", help="train the model into --dir (must be new)")
  t.add_argument("--dir", required=True)
  t.add_argument("--dataset", default="digits", help="digits, mnist1d, mnist1d:N or tfds:NAME")
  t.add_argument("--lam", type=float, default=1e-3, help="L2 regularisation of the mean loss")
  t.add_argument("--sigma", type=float, default=1.0, help="standard deviation of the objective perturbation")
  t.add_argument("--epsilon", type=float, default=1.0)
  t.add_argument("--delta", type=float, default=1e-4)
  t.add_argument("--seed", type=int, default=0)
  t.add_argument("--data-dir", default=None, help="TFDS data directory (tfds: datasets only)")
  f = ops.add_parser("forget", help="remove ids (a Newton step, or a retrain when the budget would be passed)")
  f.add_argument("--dir", required=True)
  group = _ids_options(f)
  group.add_argument("--resume", action="store_true", help="finish an interrupted request")
  f.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                 help="give up if another writer holds the directory's lock this long")
  ops.add_parser("status", help="guarantee, budget spent, ledger, test accuracy").add_argument("--dir", required=True)


def _lm_parser(sub) -> None:
  lm = sub.add_parser("lm", help="language-model unlearning on the generated TOFU-like benchmark")
  ops = lm.add_subparsers(dest="lm_command", required=True, parser_class=_Parser)
  p = ops.add_parser(
      "demo", help="build the world and its models, unlearn the forget authors with every method, compare",
      description="Generates the TOFU-like world, pretrains a small decoder on its world knowledge, fine-tunes the "
                  "target model on every author and the retain model without the forget authors (cached), unlearns "
                  "with each language-model method and prints forget quality, model utility and the rest.")
  p.add_argument("--forget", default="forget10", choices=("forget01", "forget05", "forget10"),
                 help="which authors to forget (1, 5 or 10 %%, at least one author)")
  from jaxunlearn._src import methods as methods_lib

  p.add_argument("--methods", default="all",
                 help="comma-separated methods or 'all' (" + ", ".join(methods_lib.names(task="lm")) + ")")
  p.add_argument("--world", default="small", choices=("tiny", "small", "large"),
                 help="small: 40 authors (minutes on 2 CPU cores); large: 200 authors, as TOFU; tiny: a smoke test "
                      "(seconds, meaningless numbers)")
  p.add_argument("--seed", type=int, default=0, help="seed of the world, the models and the unlearning")
  p.add_argument("--cache-dir", default=None, help="where the trained models are kept (default: "
                 "$XDG_CACHE_HOME/jaxunlearn/lm or ~/.cache/jaxunlearn/lm)")
  p.add_argument("--no-cache", action="store_true", help="train everything, keep nothing")
  p.add_argument("--relearn", action="store_true",
                 help="also run the relearning attack on every model (about 20 s each on 2 CPU cores)")
  p.add_argument("--select", default="",
                 help="comma-separated methods to run again with checkpoint selection on a validation signal "
                      "(rows NAME+select: the epoch whose forget NLL is closest to unseen text's)")
  p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON to this path")
  p.add_argument("--plot", dest="plot_path", default=None,
                 help="write a PNG: model utility against forget quality (log scale)")


def compile_cache_dir(flag: str | None = None) -> str | None:
  """Where the command line keeps JAX's persistent compilation cache: ``flag`` (``--compile-cache``),
  else ``$JAXUNLEARN_COMPILE_CACHE``, else ``$XDG_CACHE_HOME/jaxunlearn/xla`` (default
  ``~/.cache/jaxunlearn/xla``); ``None`` when the value is ``off``."""
  import os

  value = flag if flag is not None else os.environ.get("JAXUNLEARN_COMPILE_CACHE")
  if value is not None:
    return None if value.strip().lower() in ("off", "none", "0", "") else os.path.expanduser(value)
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jaxunlearn", "xla")


def enable_compile_cache(directory: str) -> None:
  """Turns on JAX's persistent compilation cache in ``directory`` for every program (a one-off
  request in a fresh process then reuses what an earlier process compiled). Must run before the
  first compilation of the process."""
  import jax

  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of the ``jaxunlearn`` console script."""
  parser = _Parser(prog="jaxunlearn", description="Machine unlearning for JAX and Flax.")
  parser.add_argument("--compile-cache", default=None, metavar="DIR|off",
                      help="JAX's persistent compilation cache (default: $JAXUNLEARN_COMPILE_CACHE, else "
                           "$XDG_CACHE_HOME/jaxunlearn/xla or ~/.cache/jaxunlearn/xla; 'off' disables it)")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
  _demo_parser(sub)
  _score_parser(sub)
  _methods_parser(sub)
  _sisa_parser(sub)
  _certified_parser(sub)
  _knn_parser(sub)
  _train_forget_parsers(sub)
  _launch_parser(sub)
  _lm_parser(sub)
  args = parser.parse_args(argv)
  if args.command == "launch":
    from jaxunlearn._src import distributed

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
      parser.error("launch needs a command after --, e.g. jaxunlearn launch --processes 2 -- demo")
    return distributed.launch(args.processes, command, devices_per_process=args.devices_per_process)
  from jaxunlearn._src import distributed

  distributed.initialize_from_env()  # a process started by `jaxunlearn launch` joins its group first
  cache = compile_cache_dir(args.compile_cache)
  if cache is not None:
    enable_compile_cache(cache)
  from jaxunlearn._src import reports
  from jaxunlearn._src.sisa import CheckpointError, LockTimeout

  try:
    if args.command == "demo":
      return reports.run_demo(args)
    if args.command == "score":
      return reports.run_score(args)
    if args.command == "methods":
      return reports.run_methods(args)
    if args.command == "lm":
      return reports.run_lm_demo(args)
    if args.command in ("train", "forget"):
      from jaxunlearn._src import audit_cli

      return audit_cli.run(args)
    if args.command == "knn":
      from jaxunlearn._src import knn_cli

      return knn_cli.run(args)
    if args.command == "certified":
      from jaxunlearn._src import certified_cli

      return certified_cli.run(args)
    if args.command == "sisa":
      from jaxunlearn._src import sisa_cli

      return sisa_cli.run(args)
  except (ValueError, TypeError, FileExistsError, FileNotFoundError, CheckpointError, LockTimeout) as err:
    print(f"jaxunlearn {args.command}: error: {err}", file=sys.stderr)
    return 2
  except OSError as err:  # unwritable directory, full disk, a file where a directory should be, ...
    where = f" ({err.filename})" if err.filename else ""
    print(f"jaxunlearn {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
    return 2
  parser.error(f"unknown command {args.command!r}")
  return 2


if __name__ == "__main__":
  raise SystemExit(main())
