"""``jaxunlearn knn``: exact kNN forgetting on a reference dataset's (flattened) inputs, checked
against an index rebuilt without the forgotten examples."""

from __future__ import annotations

import time

import numpy as np

from jaxunlearn._src import id_text, loaders
from jaxunlearn._src.knn import KNNClassifier


def run(args) -> int:
  """Builds the index, forgets, compares with a rebuilt index; exit 0 when they agree, 1 if not."""
  from jaxunlearn._src.reports import _console
  from rich.table import Table

  console = _console()  # wide when piped: no line breaks inside the messages
  train, test = loaders.load(args.dataset, data_dir=args.data_dir)
  ids = id_text.parse_forget(args.forget, train, seed=args.seed)
  flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
  t0 = time.perf_counter()
  index = KNNClassifier(flat(train.x), train.y, train.ids, k=args.k, num_classes=train.num_classes)
  build = time.perf_counter() - t0
  before = index.predict(flat(test.x))
  t0 = time.perf_counter()
  index.forget(ids)
  forget_s = time.perf_counter() - t0
  after = index.predict(flat(test.x))
  keep = ~np.isin(train.ids, ids)
  t0 = time.perf_counter()
  rebuilt = KNNClassifier(flat(train.x[keep]), train.y[keep], train.ids[keep], k=args.k, num_classes=train.num_classes)
  rebuild_s = time.perf_counter() - t0
  reference = rebuilt.predict(flat(test.x))
  same_ids = np.array_equal(index.kneighbors(flat(test.x))[0], rebuilt.kneighbors(flat(test.x))[0])
  forgotten_found = np.isin(index.kneighbors(flat(train.x[~keep]))[0], ids).any()
  table = Table(title=f"Exact kNN forgetting on {args.dataset} (k = {args.k}, forget {args.forget}: {len(ids)} examples)")
  for col in ("index", "examples", "test accuracy", "seconds"):
    table.add_column(col, justify="left" if col == "index" else "right")
  table.add_row("before forgetting", str(len(train)), f"{np.mean(before == test.y):.4f}", f"{build:.3f} (build)")
  table.add_row("after forget()", str(len(index)), f"{np.mean(after == test.y):.4f}", f"{forget_s:.4f} (forget)")
  table.add_row("rebuilt without them", str(len(rebuilt)), f"{np.mean(reference == test.y):.4f}",
                f"{rebuild_s:.3f} (build)")
  console.print(table)
  exact = bool(np.array_equal(after, reference) and same_ids and not forgotten_found)
  console.print(("exact: every test query has the same neighbours and label as in the rebuilt index, and no "
                 "forgotten example is anyone's neighbour") if exact else "MISMATCH with the rebuilt index")
  return 0 if exact else 1
