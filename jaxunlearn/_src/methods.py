"""The method registry: one entry per unlearning method, which ``demo``, ``score``, the benchmarks
and the examples iterate over.

An entry names the method's recipe (``jaxunlearn.recipes``, one signature for all) and, where it
exists, its N-models version (``Stacked`` lanes). Its default hyper-parameters are read from the
recipe's signature, the one place they are written. Adding a method is adding one entry (plus
its transform or loss): ``register(Method(...))``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn._src import adversarial, distill, lane_recipes, lm_knowledge, lm_recipes, lm_rmu, recipes, relabel, sparse

# Arguments of a recipe that are not hyper-parameters: the data, the seed, and what a user may
# pass to override a default derived from the others.
_NOT_HYPER = {"loss_fn", "lm", "params", "forget", "retain", "seed", "optimizer", "state", "key", "full", "micro_batch",
              "progress", "stats", "batch_sharding", "compute_dtype", "validation"}
TASKS = ("classification", "lm")


@dataclasses.dataclass(frozen=True)
class Method:
  """One unlearning method.

  Attributes:
    name: the registry key (and the name of its recipe).
    summary: a one-line description.
    citation: where the method comes from.
    unlearn: ``unlearn(loss_fn, params, *, forget, retain, seed, **hyper) -> params``.
    unlearn_many: ``unlearn_many(stacked: Stacked, **hyper) -> stacked params`` for N models at
      once, or ``None`` (``many`` then runs the one-model recipe on each model in turn).
    needs: model context the recipe takes beyond the common arguments: ``"init_fn"`` (fresh
      parameters), ``"apply_fn"`` (the model's logits), ``"holdout"`` (held-out examples
      distributed like the forget set); ``demo`` and ``score`` supply them.
    task: ``"classification"`` (recipes of ``jaxunlearn.recipes``, first argument ``loss_fn``)
      or ``"lm"`` (recipes of ``jaxunlearn.lm.recipes``, first argument the ``LM``, data as
      token batches). Names are unique within a task.
  """

  name: str
  summary: str
  citation: str
  unlearn: Callable[..., Any]
  unlearn_many: Callable[..., Any] | None = None
  needs: tuple[str, ...] = ()
  task: str = "classification"

  @property
  def defaults(self) -> dict[str, Any]:
    """The hyper-parameters and their defaults, read from ``unlearn``'s signature."""
    out = {}
    for p in inspect.signature(self.unlearn).parameters.values():
      if p.kind == p.KEYWORD_ONLY and p.name not in _NOT_HYPER and p.name not in self.needs \
          and p.default is not p.empty and p.default is not None:
        out[p.name] = p.default
    return out

  def __call__(self, loss_fn, params, *, forget, retain, seed: int, **kwargs):
    """Runs the recipe: defaults, overridden by ``kwargs`` (hyper-parameters or ``needs``)."""
    unknown = set(kwargs) - set(inspect.signature(self.unlearn).parameters)
    if unknown:
      raise TypeError(f"{self.name} has no argument(s) {sorted(unknown)}; its hyper-parameters are "
                      f"{sorted(self.defaults)}.")
    return self.unlearn(loss_fn, params, forget=forget, retain=retain, seed=seed, **kwargs)

  def many(self, stacked: lane_recipes.Stacked, **overrides):
    """Unlearns the N stacked models with the defaults, overridden by ``overrides``.

    With an N-models version (``unlearn_many``) the N models are lanes of one program; without
    one, the one-model recipe runs on each model in turn (model ``m`` with seed
    ``stacked.seeds[m]``), reusing its compiled steps, and the results are stacked.
    """
    if self.task != "classification":
      raise NotImplementedError(f"{self.name} is a {self.task} method; N stacked models are classification's.")
    if self.unlearn_many is not None:
      return self.unlearn_many(stacked, **{**self.defaults, **overrides})
    needs = {k: stacked.context(k) for k in self.needs}
    # The stacked models may be sharded over devices (lanes): take them to the host and run each
    # model on the default device, blocking after each (slicing a sharded stack model by model
    # queues cross-device copies that can stall forced CPU devices).
    host = jax.device_get(stacked.params)
    out = []
    for m, seed in enumerate(stacked.seeds):
      one = jax.tree.map(lambda a: jnp.asarray(a[m]), host)  # noqa: B023 - used at once
      out.append(jax.device_get(self(stacked.loss_fn, one, forget=stacked.forget, retain=stacked.retain,
                                     seed=int(seed), **needs, **overrides)))
    return jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *out)

  def describe(self, **overrides) -> str:
    """The summary with the hyper-parameters in use."""
    hyper = {**self.defaults, **overrides}
    return f"{self.summary} ({', '.join(f'{k}={v!r}' for k, v in hyper.items())})"


_REGISTRY: dict[tuple[str, str], Method] = {}


def _check_task(task: str) -> None:
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}.")


def register(method: Method, *, replace: bool = False) -> Method:
  """Adds ``method`` to the registry (``replace=True`` to redefine a name)."""
  if not method.name.isidentifier():
    raise ValueError(f"method names are identifiers (they name recipes and CLI choices), got {method.name!r}.")
  _check_task(method.task)
  if (method.task, method.name) in _REGISTRY and not replace:
    raise ValueError(f"method {method.name!r} is already registered for {method.task} (pass replace=True to redefine it).")
  _REGISTRY[(method.task, method.name)] = method
  return method


def unregister(name: str, *, task: str = "classification") -> None:
  """Removes a method (a user's experiment, a test's toy method)."""
  get(name, task=task)
  del _REGISTRY[(task, name)]


def get(name: str, *, task: str = "classification") -> Method:
  """The ``task``'s method called ``name``; ``ValueError`` listing the known ones otherwise."""
  _check_task(task)
  try:
    return _REGISTRY[(task, name)]
  except KeyError:
    raise ValueError(f"unknown method {name!r}; known {task} methods: {', '.join(names(task=task))}.") from None


def names(*, task: str = "classification") -> list[str]:
  """The ``task``'s registered methods, in registration order."""
  _check_task(task)
  return [name for (t, name) in _REGISTRY if t == task]


def all_methods(*, task: str = "classification") -> Mapping[str, Method]:
  """A read-only view of the ``task``'s methods, by name."""
  import types

  return types.MappingProxyType({name: _REGISTRY[(task, name)] for name in names(task=task)})


def parse(spec: str, *, task: str = "classification") -> list[str]:
  """``"all"`` or a comma-separated list of the ``task``'s registered names (``ValueError`` naming
  the unknown)."""
  known = names(task=task)
  if spec == "all":
    return known
  chosen = [m.strip() for m in spec.split(",") if m.strip()]
  unknown = [m for m in chosen if m not in known]
  if unknown or not chosen:
    raise ValueError(f"unknown method(s) {unknown or spec!r}; known {task} methods: {', '.join(known)}.")
  return chosen


register(Method(
    "finetune", "fine-tune on the retain set alone (catastrophic forgetting)",
    "baseline of Golatkar et al., CVPR 2020", recipes.finetune, lane_recipes.finetune))
register(Method(
    "gradient_ascent", "gradient ascent on the forget-set loss", "the NegGrad baseline (e.g. Kurmanji et al., "
    "NeurIPS 2023); Jang et al., ACL 2023 for language models", recipes.gradient_ascent, lane_recipes.gradient_ascent))
register(Method(
    "gradient_difference", "descend on the retain loss while ascending the forget loss",
    "Liu et al., 'Continual learning and private unlearning', CoLLAs 2022", recipes.gradient_difference,
    lane_recipes.gradient_difference))
register(Method(
    "ssd", "Selective Synaptic Dampening of parameters more important to the forget set",
    "Foster et al., AAAI 2024", recipes.ssd, lane_recipes.ssd))
register(Method(
    "reset_repair", "re-initialise the selected layers, then fine-tune on the retain set",
    "after EU-k (re-initialise the last k layers and retrain them; here every layer is then fine-tuned), "
    "Goel et al., 2022, 'Towards adversarial evaluation of unlearning'",
    recipes.reset_repair, lane_recipes.reset_repair, needs=("init_fn",)))
_CLASSIFICATION = (  # name, summary, citation, recipe, context the recipe needs
    ("random_label", "fine-tune on the forget set relabelled at random (wrong labels), with the retain set",
     "Golatkar et al., CVPR 2020 (baseline); Graves et al., 'Amnesiac Machine Learning', AAAI 2021",
     relabel.random_label, ()),
    ("kl_ascent", "ascend the forget loss, with KL to the original model on the retain set",
     "GradDiff's KL variant (Maini et al., TOFU, COLM 2024), on classification", distill.kl_ascent, ("apply_fn",)),
    ("prune_finetune", "prune the smallest weights globally, fine-tune on the retain set with them held at zero",
     "Jia et al., 'Model Sparsity Can Simplify Machine Unlearning', NeurIPS 2023", sparse.prune_finetune, ()),
    ("l1_sparse", "fine-tune on the retain set with a linearly decaying L1 penalty",
     "Jia et al., 'Model Sparsity Can Simplify Machine Unlearning', NeurIPS 2023", sparse.l1_sparse, ()),
    ("noise_finetune", "calibrated Gaussian noise on the weights, then fine-tune on the retain set",
     "Gaussian mechanism (Balle & Wang, ICML 2018) + retain fine-tuning", sparse.noise_finetune, ()),
    ("fisher_forgetting", "noise scaled by the inverse diagonal Fisher of the retain set",
     "Golatkar et al., 'Eternal Sunshine of the Spotless Net', CVPR 2020", sparse.fisher_forgetting, ()),
    ("scrub", "move away from the original on the forget set (max steps), stay with it on retain (min steps)",
     "Kurmanji et al., 'Towards Unbounded Machine Unlearning', NeurIPS 2023", distill.scrub, ("apply_fn",)),
    ("scrub_r", "SCRUB rewound to the epoch whose forget error is closest to held-out data's",
     "Kurmanji et al., NeurIPS 2023 (SCRUB+R)", distill.scrub_r, ("apply_fn", "holdout")),
    ("salun", "random labelling restricted to the weights most salient for the forget loss",
     "Fan et al., 'SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency', ICLR 2024",
     relabel.salun, ()),
    ("bad_teacher", "distil the original on retain examples and a random network on forget examples",
     "Chundawat et al., 'Can Bad Teaching Induce Forgetting?', AAAI 2023", distill.bad_teacher,
     ("apply_fn", "init_fn")),
    ("amun", "fine-tune on the forget set with each example's nearest adversarial neighbour, wrongly labelled",
     "Ebrahimpour-Boroojeny et al., 'AMUN: Adversarial Machine UNlearning', 2025", adversarial.amun, ("apply_fn",)),
    ("aru", "reset the parameters adversarial noise on the forget set acts through, fine-tune on retain",
     "Jung et al., 'Attack and Reset for Unlearning', 2024", adversarial.aru, ("apply_fn", "init_fn")),
)

_LM = (  # language-model methods: name, summary, citation, recipe, context the recipe needs
    ("gradient_ascent", "gradient ascent on the forget answers' next-token NLL",
     "TOFU's GradAscent (Maini et al., COLM 2024); Jang et al., ACL 2023", lm_recipes.gradient_ascent, ()),
    ("gradient_difference", "ascend the forget NLL while descending the retain NLL (or KL to the start)",
     "TOFU's GradDiff (Maini et al., COLM 2024); Liu et al., CoLLAs 2022", lm_recipes.gradient_difference, ()),
    ("npo", "negative preference optimisation on the forget answers, NLL on the retain ones",
     "Zhang et al., 'Negative Preference Optimization', COLM 2024", lm_recipes.npo, ()),
    ("simnpo", "NPO without a reference model, on the length-normalised NLL",
     "Fan et al., 'Simplicity Prevails: Rethinking Negative Preference Optimization', 2024", lm_recipes.simnpo, ()),
    ("idkdpo", "DPO preferring a refusal ('I don't know') to the true answer",
     "TOFU's IdkDPO (Maini et al., COLM 2024) on DPO (Rafailov et al., NeurIPS 2023)", lm_recipes.idkdpo,
     ("idk",)),
    ("undial", "self-distil towards the start with the true token's logit lowered",
     "Dong et al., 'UNDIAL: Self-Distillation with Adjusted Logits', NAACL 2025", lm_recipes.undial, ()),
    ("rmu", "steer a layer's activations on forget tokens to a random vector, keep them on retain tokens",
     "Li et al., 'The WMDP Benchmark' (RMU), ICML 2024", lm_rmu.rmu, ()),
    ("knowledge_unlearning", "gradient ascent until forget memorisation and extraction fall below held-out text's",
     "Jang et al., 'Knowledge Unlearning for Mitigating Privacy Risks in Language Models', ACL 2023",
     lm_knowledge.knowledge_unlearning, ("holdout",)),
)
for _task, _rows in (("classification", _CLASSIFICATION), ("lm", _LM)):
  for _name, _summary, _citation, _recipe, _needs in _rows:
    register(Method(_name, _summary, _citation, _recipe, needs=_needs, task=_task))
