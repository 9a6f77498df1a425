"""``jaxunlearn train`` and ``jaxunlearn forget``: checkpoint in, checkpoint out, audited."""

from __future__ import annotations

import json

from jaxunlearn._src import audit, id_text
from jaxunlearn._src import methods as methods_lib


def parse_hyper(items: list[str], method: str) -> dict:
  """``KEY=VALUE`` strings -> the method's hyper-parameters, typed like their defaults."""
  defaults = methods_lib.get(method).defaults
  out = {}
  for item in items:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"--hyper takes KEY=VALUE, got {item!r}.")
    if key not in defaults:
      raise ValueError(f"unknown hyper-parameter {key!r} for {method}; it takes {', '.join(sorted(defaults))}.")
    default = defaults[key]
    try:
      value = json.loads(text)
    except json.JSONDecodeError:
      value = {"True": True, "False": False, "None": None}.get(text, text)
    if isinstance(default, bool):
      if not isinstance(value, bool):
        raise ValueError(f"--hyper {key} takes true or false, got {text!r}.")
    elif isinstance(default, int) and not (isinstance(value, int) and not isinstance(value, bool)):
      raise ValueError(f"--hyper {key} takes an integer, got {text!r}.")
    elif isinstance(default, float):
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"--hyper {key} takes a number, got {text!r}.")
      value = float(value)
    out[key] = value
  return out


def run(args) -> int:
  from jaxunlearn._src.reports import _console

  console = _console()  # wide when piped: no line breaks inside the messages
  if args.command == "train":
    meta = audit.train_checkpoint(dataset=args.dataset, model=args.model, out=args.out, epochs=args.epochs,
                                  seed=args.seed, data_dir=args.data_dir)
    console.print(f"trained {args.model} on {args.dataset} ({args.epochs} epochs, {meta['train_seconds']:.1f} s, "
                  f"test accuracy {meta['test_acc']:.4f}) -> {args.out}")
    return 0
  ids = id_text.cli_ids(args.ids, args.ids_file)
  record = audit.forget_checkpoint(args.checkpoint, args.out, method=args.method, ids=ids, dataset=args.dataset,
                                   model=args.model, hyper=parse_hyper(args.hyper, args.method), seed=args.seed,
                                   data_dir=args.data_dir)
  b, a = record["before"], record["after"]
  console.print(f"{args.method} forgot {record['ids_count']} id(s) in {record['seconds']:.2f} s -> {args.out}")
  console.print(f"accuracy before -> after: forget {b['forget']:.4f} -> {a['forget']:.4f}, retain {b['retain']:.4f} "
                f"-> {a['retain']:.4f}, test {b['test']:.4f} -> {a['test']:.4f}")
  console.print(f"audit record appended to {audit.LEDGER} beside {args.out} (ids sha256 {record['ids_sha256'][:16]}...)")
  return 0
