"""PNG figures for ``jaxunlearn demo --plot`` and ``jaxunlearn score --plot`` (matplotlib, Agg)."""

from __future__ import annotations

import numpy as np


def _figure(ncols: int, width: float):
  import matplotlib

  matplotlib.use("Agg", force=False)
  import matplotlib.pyplot as plt

  return plt, *plt.subplots(1, ncols, figsize=(width, 4.2))


def demo_plot(report: dict, path: str) -> None:
  """Left: forget vs retain accuracy per method, the retrained model (the target) and the original
  marked. Right: steady-state seconds per method (compile time stacked on top), retraining beside."""
  plt, fig, (ax, ax_t) = _figure(2, 11.0)
  rows = {"original": report["original"], "retrain": report["retrain"], **report["methods"]}
  markers = "o^vD<>ph"
  colours = ["C0", "C1", "C2", "C4", "C5", "C6", "C7", "C8", "C9"]  # red is the retrained model's
  for i, (name, row) in enumerate(rows.items()):
    # Methods often land on the same spot (forget 0, retain ~1): a legend, not labels beside the
    # points, keeps every name readable; colour and marker tell them apart.
    style = {"original": dict(marker="s", c="grey", s=70), "retrain": dict(marker="*", c="crimson", s=220)}.get(
        name, dict(marker=markers[(i - 2) % len(markers)], c=colours[(i - 2) % len(colours)], s=60, alpha=0.85))
    ax.scatter(row["forget_acc"], row["retain_acc"], label=name, zorder=3, **style)
  ax.legend(fontsize=8, loc="best")
  ax.axvline(report["retrain"]["forget_acc"], color="crimson", lw=0.8, ls="--")
  ax.axhline(report["retrain"]["retain_acc"], color="crimson", lw=0.8, ls="--")
  ax.set_xlabel("forget accuracy (retrained model: dashed)")
  ax.set_ylabel("retain accuracy")
  ax.set_title(f"{report['dataset']}, forget {report['forget']} ({report['forget_size']} examples)")
  ax.grid(alpha=0.3)
  names = ["retrain"] + list(report["methods"])
  steady = np.array([rows[n]["seconds"] for n in names])
  compile_s = np.array([rows[n]["compile_seconds"] for n in names])
  y = np.arange(len(names))
  ax_t.barh(y[:1], steady[:1], color="crimson", label="retraining (steady state)")
  ax_t.barh(y[1:], steady[1:], color="C0", label="method (steady state)")
  ax_t.barh(y, compile_s, left=steady, color="lightgrey", label="compile")
  ax_t.set_yticks(y, names)
  ax_t.invert_yaxis()
  ax_t.set_xlabel(f"seconds ({report['backend']})")
  ax_t.set_title("time (retraining in red)")
  ax_t.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def score_plot(report: dict, path: str) -> None:
  """Per-example epsilon histograms (one line per method) and the NeurIPS score per method."""
  plt, fig, (ax, ax_s) = _figure(2, 11.0)
  rows = {"original": report["original"], **report["methods"]}
  bins = np.arange(0.0, 8.5, 0.5)
  for name, row in rows.items():
    eps = np.minimum(np.asarray(row["epsilon"]), bins[-1] - 1e-9)
    ax.hist(eps, bins=bins, histtype="step", lw=1.5, label=name)
  ax.set_xlabel("epsilon per forget example (8 = 8 or more)")
  ax.set_ylabel("forget examples")
  ax.set_title(f"{report['models']} models per method, forget {report['forget']}")
  ax.legend(fontsize=8)
  names = list(rows)
  ax_s.barh(np.arange(len(names)), [rows[n]["score"] for n in names])
  ax_s.set_yticks(np.arange(len(names)), names)
  ax_s.invert_yaxis()
  ax_s.set_xlabel("NeurIPS 2023 score (higher is better)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def lm_plot(report: dict, path: str) -> None:
  """The field's picture: model utility against forget quality (log scale), one point per
  method, the target and the retain model marked."""
  plt, fig, ax = _figure(1, 6.4)
  rows = [("target", report["target"]), ("retain", report["retain"])] + list(report["methods"].items())
  floor = 1e-30
  for name, row in rows:
    fq = max(row["forget_quality"], floor)
    style = {"target": dict(marker="X", s=110, color="black"), "retain": dict(marker="*", s=180, color="tab:green")}
    ax.scatter([fq], [row["model_utility"]], zorder=3, **style.get(name, dict(marker="o", s=60)))
    ax.annotate(name, (fq, row["model_utility"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
  ax.set_xscale("log")
  ax.set_xlabel("forget quality (KS p-value vs the retain model; log)")
  ax.set_ylabel("model utility")
  ax.set_title(f"{report['split']}: {report['forget_authors']} of {report['authors']} authors forgotten")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def corrective_plot(report: dict, path: str) -> None:
  """Clean test accuracy against the corruption's effect (attack success for a backdoor, agreement
  with the corrupted labels for label flips) per method, the references marked."""
  plt, fig, ax = _figure(1, 7.0)
  key = "attack_success" if report["kind"] == "backdoor" else "corrupt_label_agreement"
  styles = {"poisoned": dict(marker="s", c="grey", s=70), "clean_retrain": dict(marker="*", c="crimson", s=220),
            "retrain_flagged": dict(marker="P", c="black", s=80)}
  rows = {**report["references"], **report["methods"]}
  markers = "o^vD<>ph"
  for i, (name, row) in enumerate(rows.items()):
    style = styles.get(name, dict(marker=markers[i % len(markers)], c=f"C{i % 10}", s=55, alpha=0.85))
    ax.scatter(row[key], row["test_acc"], label=name, zorder=3, **style)
  ax.set_xlabel("attack success rate" if key == "attack_success" else "predictions keeping the corrupted label")
  ax.set_ylabel("clean test accuracy")
  ax.set_title(f"{report['dataset']}, {report['corrupt']}: unlearning the {report['flagged']} flagged examples",
               fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best", ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
