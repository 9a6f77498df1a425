"""``jaxunlearn certified ...``: certified removal on a reference dataset's (flattened) inputs."""

from __future__ import annotations

import os



from jaxunlearn._src import certified, id_text, loaders


def run(args) -> int:
  """Runs one ``jaxunlearn certified`` operation (exit 0; errors are reported by the caller)."""
  from jaxunlearn._src.reports import _console

  console = _console()  # wide when piped: no line breaks inside the messages
  if args.op == "train":
    if os.path.exists(os.path.join(args.dir, "certified.json")):
      raise FileExistsError(f"{args.dir} already holds a certified model; use a new directory.")
    train, _ = loaders.load(args.dataset, data_dir=args.data_dir)
    model = certified.fit(train.x, train.y, train.ids, lam=args.lam, sigma=args.sigma, epsilon=args.epsilon,
                          delta=args.delta, num_classes=train.num_classes, seed=args.seed,
                          tags={"dataset": args.dataset, "data_dir": args.data_dir})
    model.save(args.dir)
    console.print(f"trained a certified logistic regression on {len(model)} {args.dataset} examples "
                  f"(lambda {model.lam:g}, sigma {model.sigma:g}, ({model.epsilon:g}, {model.delta:g})-certified, "
                  f"budget {model.budget:.4g}) -> {args.dir}")
    return 0
  if args.op == "forget":
    ids = None if args.resume else id_text.cli_ids(args.ids, args.ids_file)
    out = certified.forget(args.dir, ids, wait=args.wait)
    if out is None:
      console.print("nothing to do: no interrupted request.")
      return 0
    what = "one Newton step" if out.kind == "newton" else "a retrain with fresh noise (the step would pass the budget)"
    console.print(f"removed {len(out.ids)} id(s) with {what} in {out.seconds:.3f} s; bound spent "
                  f"{out.spent:.4g} of {out.budget:.4g} ({out.left:.4g} left)")
    return 0
  if args.op == "status":
    return _status(console, args.dir)
  raise ValueError(f"unknown certified operation {args.op!r}")


def _status(console, directory: str) -> int:
  from rich.table import Table

  model = certified.load(directory)
  console.print(f"certified model {directory}: {len(model)} examples, {model.num_classes} classes, lambda "
                f"{model.lam:g}, sigma {model.sigma:g}, ({model.epsilon:g}, {model.delta:g})-certified")
  console.print(f"bound spent {model.spent:.4g} of {model.budget:.4g} ({model.left:.4g} left); "
                f"{len(model.ledger)} removal(s), {model.retrains} retrain(s); measured gradient residual "
                f"{model.gradient_residual():.3g}")
  dataset = model.tags.get("dataset")
  if dataset:
    _, test = loaders.load(dataset, data_dir=model.tags.get("data_dir"))
    console.print(f"test accuracy ({dataset}): {model.accuracy(test.x, test.y):.4f}")
  if model.ledger:
    table = Table(title="ledger")
    for col in ("#", "time", "ids", "kind", "bound", "spent", "seconds"):
      table.add_column(col)
    for k, e in enumerate(model.ledger, start=1):
      shown = ", ".join(map(str, e["ids"][:8])) + (" ..." if len(e["ids"]) > 8 else "")
      table.add_row(str(k), e["at"][:19], shown, e["kind"], f"{e['bound']:.3g}", f"{e['spent']:.3g}",
                    f"{e['seconds']:.3f}")
    console.print(table)
  return 0



