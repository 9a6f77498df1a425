r"""Sums of squared per-example gradients without materialising per-example gradients.

For a dense layer :math:`z_i = a_i W + b` applied to example :math:`i` (one row per example), the
per-example gradient is :math:`\nabla_W \ell_i = a_i^\top \delta_i` with :math:`\delta_i =
\partial \ell_i / \partial z_i`, so

.. math:: \sum_i (\nabla_W \ell_i)^{\circ 2} = (a^{\circ 2})^\top (\delta^{\circ 2}), \qquad
          \sum_i (\nabla_b \ell_i)^{\circ 2} = \textstyle\sum_i \delta_i^{\circ 2},

one matrix product over the batch, the cost of one backward pass (Goodfellow, 2015).

A kernel applied to several rows per example (tokens of a sequence, or the patches of a
convolution written as a matmul, like the reference CNN's) has per-example gradient
:math:`a_i^\top \delta_i` summed over example :math:`i`'s rows; these are formed from the same
backward pass by one batched product (in groups of examples that bound memory) and squared; a
bias added to such rows has per-example gradient :math:`\sum_{\text{rows}} \delta_i`, and a
scale multiplying them elementwise (a normalisation layer's) :math:`\sum_{\text{rows}} a_i \odot
\delta_i`, with :math:`a` the other factor.

This works on the *traced program* of any ``loss_fn``: the per-example losses
``vmap(lambda e: loss_fn(params, e[None]))`` are traced to a jaxpr (inlining nested ``jit`` calls),
and every parameter leaf whose only use is as the right operand of a ``dot_general`` contracting
its leading axes with the trailing axes of ``[examples, *rows, *features]`` (a kernel of any rank,
possibly reshaped first: dense layers, attention projections, convolutions as matmuls) or, through
reshapes and broadcasts that keep it on the trailing axes, as an addend (a bias) or a factor (a
scale) of such an array is handled as above. The
cotangents :math:`\delta` come from one ``grad`` of the summed per-example losses with respect to
zero perturbations added to those outputs (exact: each example's loss depends only on its own
rows). A site counts only if tracing again with one more example grows exactly its leading axis
(that axis is the example axis). Every other leaf (``lax.conv`` kernels, tied weights, weights in
a penalty term) falls back to ``vmap(grad)`` restricted to those leaves, which costs about a full
``vmap(grad)`` pass however few they are.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxunlearn._src.base import LossFn, Params, path_str, vary, varying_axes
from jaxunlearn._src.jaxpr_eval import Eqn, evaluate, flatten

_ALIAS = {"broadcast_in_dim", "reshape"}


class _Site(NamedTuple):
  """A parameter leaf whose per-example squared gradients come from one perturbed output.

  ``kind``: ``"dense"`` / ``"rows"`` (a kernel applied to one / several rows per example),
  ``"bias"`` / ``"rows_bias"`` (added to them), ``"scale"`` (multiplied elementwise with them).
  """

  kind: str
  eqn: int  # the equation whose output is perturbed (its cotangent is delta)
  features: int  # elements of the output's feature axes (the kernel's free axes, the bias/scale's)
  contracted: int = 0  # kernels: elements of the contracted axes
  other: int = -1  # scales: operand position of the other factor of the multiply

  @property
  def recorded(self) -> int | None:
    """The operand of ``eqn`` whose value the squares need: a kernel's input, a scale's factor."""
    if self.kind in ("dense", "rows"):
      return 0
    return self.other if self.kind == "scale" else None


def _strip_ones(shape) -> tuple[int, ...]:
  shape = tuple(shape)
  while shape and shape[0] == 1:
    shape = shape[1:]
  return shape


def _follow(eqns: list[Eqn], i: int, pos: int, uses, aliases) -> tuple[Eqn, int, int, list[Eqn]]:
  """Follows single-use alias equations (and same-dtype converts) from use ``(i, pos)``.

  Returns the first other equation, its index, the operand position there, and the aliases passed.
  """
  e, chain = eqns[i], []
  while e.primitive.name in aliases or (
      e.primitive.name == "convert_element_type" and e.out_avals[0].dtype == e.in_avals[0].dtype):
    nxt = uses.get(e.outs[0], [])
    if len(nxt) != 1:
      break
    chain.append(e)
    i, pos = nxt[0]
    e = eqns[i]
  return e, i, pos, chain


def _keeps_trailing(chain: list[Eqn]) -> bool:
  """Whether every alias step keeps the array's elements, in order, on the trailing axes: reshapes
  that only add or drop leading 1s, broadcasts that align the operand to the right."""
  for e in chain:
    s_in, s_out = tuple(e.in_avals[0].shape), tuple(e.out_avals[0].shape)
    core = _strip_ones(s_in)
    if e.primitive.name == "reshape":
      if _strip_ones(s_out) != core:
        return False
    elif e.primitive.name == "broadcast_in_dim":
      dims, k, n = e.params["broadcast_dimensions"], len(s_in), len(s_out)
      if any(dims[j] != n - k + j or s_out[dims[j]] != s_in[j] for j in range(k - len(core), k)):
        return False
    elif e.primitive.name != "convert_element_type":
      return False
  return True


def _analyse(eqns: list[Eqn], param_tokens: list[int], batch: int):
  """Finds decomposable leaves: ``{leaf index: _Site}``.

  Kinds: ``"dense"`` (a kernel applied to one row per example), ``"rows"`` (a kernel applied to
  several rows per example: tokens, pixels, patches), ``"bias"`` (added to one row per example),
  ``"rows_bias"`` (added to several rows per example), ``"scale"`` (multiplied elementwise with
  rows of the example).
  """
  uses: dict[int, list[tuple[int, int]]] = {}
  for i, e in enumerate(eqns):
    for pos, t in enumerate(e.ins):
      if isinstance(t, int):
        uses.setdefault(t, []).append((i, pos))
  found = {}
  scale_eqns: set[int] = set()  # a multiply records one factor: one scale site per multiply
  for k, tok in enumerate(param_tokens):
    u = uses.get(tok, [])
    if len(u) != 1:
      continue
    i, pos = u[0]
    # A kernel, possibly reshaped first (a convolution kernel flattened to [window * C_in, C_out]),
    # contracting its leading axes with the trailing axes of [examples, *rows, *features].
    e, j, jpos, _ = _follow(eqns, i, pos, uses, {"reshape"})
    if e.primitive.name == "dot_general" and jpos == 1:
      (lc, rc), (lb, rb) = e.params["dimension_numbers"]
      lhs, rhs = (tuple(a.shape) for a in e.in_avals)
      c, free = len(rc), len(lhs) - len(rc)
      if (not lb and not rb and c >= 1 and free >= 1 and tuple(rc) == tuple(range(c))
          and tuple(lc) == tuple(range(free, len(lhs))) and lhs[free:] == rhs[:c] and lhs[0] == batch
          and tuple(e.out_avals[0].shape) == lhs[:free] + rhs[c:]):
        kind = "dense" if all(d == 1 for d in lhs[1:free]) else "rows"
        found[k] = _Site(kind, j, features=math.prod(rhs[c:]), contracted=math.prod(rhs[:c]))
      continue
    # A bias (added) or a scale (multiplied, as in a normalisation layer): followed through
    # single-use broadcasts and reshapes that keep it on the trailing axes, to an add or a multiply
    # producing an [examples, *rows, *core] array.
    core = _strip_ones(eqns[i].in_avals[pos].shape)
    e, j, jpos, chain = _follow(eqns, i, pos, uses, _ALIAS)
    out = tuple(e.out_avals[0].shape)
    name = e.primitive.name
    if not (core and name in ("add", "add_any", "mul") and _keeps_trailing(chain) and len(out) > len(core)
            and out[0] == batch and out[len(out) - len(core):] == core
            and len(e.in_avals[jpos].shape) == len(out) and _strip_ones(e.in_avals[jpos].shape) == core):
      continue
    other = tuple(e.in_avals[1 - jpos].shape)
    one_row = all(d == 1 for d in out[1:len(out) - len(core)])
    if name == "mul":
      # The other factor, broadcast to the output (per example, per row, or shared).
      if len(other) == len(out) and all(o in (1, d) for o, d in zip(other, out)) and j not in scale_eqns:
        scale_eqns.add(j)
        found[k] = _Site("scale", j, features=math.prod(core), other=1 - jpos)
    elif other == out:
      found[k] = _Site("bias" if one_row else "rows_bias", j, features=math.prod(core))
  return found


def _confirm_example_axis(total, flat_p, flat_c, eqns, found):
  """Keeps the sites whose leading axis is the example axis: traced again with one more example,
  that axis (and only it) must grow by one. A program whose structure changes keeps none."""
  if not found:
    return found
  # One more example, as arrays rather than shapes so that they keep every attribute of the type
  # (inside shard_map, the axes they vary over); only their shapes are traced, nothing is computed.
  bigger = [jnp.concatenate([c, c[:1]]) for c in flat_c]
  eqns2 = flatten(jax.make_jaxpr(total)(flat_p, bigger))[0]
  if len(eqns2) != len(eqns):
    return {}
  def same_or_grown(x, y):
    return tuple(x) == tuple(y) or (len(x) == len(y) >= 1 and y[0] == x[0] + 1 and tuple(x[1:]) == tuple(y[1:]))

  kept = {}
  for k, site in found.items():
    i = site.eqn
    a, b = eqns[i], eqns2[i]
    pairs = [(x.shape, y.shape) for x, y in zip(a.in_avals + a.out_avals, b.in_avals + b.out_avals)
             if x is not None and y is not None]
    out_a, out_b = a.out_avals[0].shape, b.out_avals[0].shape
    if (a.primitive == b.primitive and all(same_or_grown(x, y) for x, y in pairs)
        and out_b[0] == out_a[0] + 1 and tuple(out_b[1:]) == tuple(out_a[1:])):
      kept[k] = site
  return kept


_ROWS_LIMIT = 1 << 24  # per-example kernel gradients held at once (floats), off CPU
_CPU_ROWS_LIMIT = 1  # on CPU: one example at a time


def _rows_group(examples: int, k: int, n: int) -> int:
  """Examples whose ``K x N`` kernel gradients are formed at once: as many as ``_ROWS_LIMIT``
  floats allow, one at a time on CPU. XLA:CPU runs the batched product with a short contraction
  (few rows per example) far below matmul speed: 64 examples of 8 rows with a 128 x 512 kernel
  took 35 ms batched against 4 ms one example at a time, and on the reference CNNs one at a time
  was also faster than cache-sized groups (measured on a 2-core CPU)."""
  limit = _CPU_ROWS_LIMIT if jax.default_backend() == "cpu" else _ROWS_LIMIT
  return max(1, min(examples, limit // max(1, k * n)))


def _rows_kernel_squares(a: jax.Array, d: jax.Array) -> jax.Array:
  r""":math:`\sum_i (a_i^\top \delta_i)^{\circ 2}` for ``a`` ``[B, P, K]``, ``d`` ``[B, P, N]``,
  forming the per-example kernel gradients in groups (``_rows_group``) inside a ``lax.scan``, so
  memory stays bounded for wide layers."""
  b, _, k = a.shape
  n = d.shape[-1]
  group = _rows_group(b, k, n)
  if group >= b:
    return jnp.sum(jnp.square(jnp.einsum("bpk,bpn->bkn", a, d)), axis=0)
  pad = (-b) % group  # zero rows add zero gradients
  a = jnp.pad(a, ((0, pad), (0, 0), (0, 0))).reshape((-1, group) + a.shape[1:])
  d = jnp.pad(d, ((0, pad), (0, 0), (0, 0))).reshape((-1, group) + d.shape[1:])

  def body(acc, ad):
    return acc + jnp.sum(jnp.square(jnp.einsum("bpk,bpn->bkn", ad[0], ad[1])), axis=0), None

  return jax.lax.scan(body, jnp.zeros((k, n), jnp.float32), (a, d))[0]


class _Traced(NamedTuple):
  flat_p: list
  p_def: Any
  flat_c: list
  example_loss: Any  # (param leaves, one example) -> loss
  program: tuple  # _flatten's (eqns, in_tokens, const_tokens, out_tokens)
  found: dict  # _analyse's sites, confirmed on the example axis


def _trace(loss_fn, params, chunk) -> _Traced:
  """Traces the summed per-example losses of ``chunk`` and finds the decomposable leaves."""
  flat_p, p_def = jax.tree_util.tree_flatten(params)
  flat_c, c_def = jax.tree_util.tree_flatten(chunk)

  def example_loss(p_leaves, example):
    p = jax.tree_util.tree_unflatten(p_def, p_leaves)
    return loss_fn(p, jax.tree_util.tree_map(lambda x: x[None], example))

  def total(p_leaves, c_leaves):
    per = jax.vmap(example_loss, in_axes=(None, 0))(p_leaves, jax.tree_util.tree_unflatten(c_def, c_leaves))
    return jnp.sum(per)

  program = flatten(jax.make_jaxpr(total)(flat_p, flat_c))
  eqns, in_tokens = program[0], program[1]
  found = _analyse(eqns, in_tokens[:len(flat_p)], int(jnp.shape(flat_c[0])[0]))
  found = _confirm_example_axis(total, flat_p, flat_c, eqns, found)
  return _Traced(flat_p, p_def, flat_c, example_loss, program, found)


def squared_grad_sum(loss_fn, params, chunk) -> Any:
  """:math:`\\sum_i (\\partial \\ell(\\theta; z_i) / \\partial \\theta)^2` over the examples of
  ``chunk`` (leading axis), float32, shaped like ``params``; ``loss_fn`` is called per example on
  one-example batches, exactly as ``vmap(grad)`` would."""
  flat_p, p_def, flat_c, example_loss, (eqns, in_tokens, const_tokens, out_tokens), found = _trace(
      loss_fn, params, chunk)
  batch = int(jnp.shape(flat_c[0])[0])
  out = [None] * len(flat_p)
  if found:
    # Inside shard_map a site varies over the devices' axes like its activation: an unvarying
    # perturbation would have its cotangent summed over devices.
    sites = {}
    for site in found.values():
      aval = eqns[site.eqn].out_avals[0]
      sites[site.eqn] = vary(jnp.zeros(aval.shape, aval.dtype), varying_axes(aval))
    record = {site.eqn: site.recorded for site in found.values() if site.recorded is not None}

    def perturbed(eps):
      (loss,), acts = evaluate(eqns, in_tokens, const_tokens, out_tokens, flat_p + flat_c, eps, record)
      return loss, acts

    deltas, acts = jax.grad(perturbed, has_aux=True)(sites)
    for k, site in found.items():
      i, n_out = site.eqn, site.features
      d = deltas[i].reshape(batch, -1, n_out).astype(jnp.float32)  # [examples, rows, N]
      if site.kind == "dense":
        a2 = jnp.square(acts[i].reshape(batch, site.contracted).astype(jnp.float32))
        out[k] = a2.T @ jnp.square(d[:, 0])
      elif site.kind == "rows":
        out[k] = _rows_kernel_squares(acts[i].reshape(batch, -1, site.contracted).astype(jnp.float32), d)
      elif site.kind == "scale":  # example i's gradient: the sum over its rows of (other factor * delta)
        factor = jnp.broadcast_to(acts[i], deltas[i].shape).reshape(batch, -1, n_out).astype(jnp.float32)
        out[k] = jnp.sum(jnp.square(jnp.sum(factor * d, axis=1)), axis=0)
      else:  # a bias: example i's gradient is the sum of its rows' cotangents
        out[k] = jnp.sum(jnp.square(jnp.sum(d, axis=1)), axis=0)
  rest = [k for k in range(len(flat_p)) if k not in found]
  if rest:
    def rest_loss(sub, example):
      leaves = list(flat_p)
      for k, v in zip(rest, sub):
        leaves[k] = v
      return example_loss(leaves, example)

    grads = jax.vmap(jax.grad(rest_loss), in_axes=(None, 0))([flat_p[k] for k in rest], chunk)
    for k, g in zip(rest, grads):
      out[k] = jnp.sum(jnp.square(g.astype(jnp.float32)), axis=0)
  return jax.tree_util.tree_unflatten(p_def, [o.reshape(jnp.shape(p)) for o, p in zip(out, flat_p)])


def decomposed_leaves(loss_fn: LossFn, params: Params, chunk: Any) -> list[str]:
  """Paths of the parameter leaves whose per-example squared gradients ``fisher_diagonal``'s
  default method forms from one backward pass; the others cost a ``vmap(grad)`` pass.

  Args:
    loss_fn: ``loss(params, batch) -> scalar`` as for ``fisher_diagonal``.
    params: the parameter pytree.
    chunk: a few examples (a pytree with a leading example axis) to trace the loss on.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxunlearn import fisher_fast_path_leaves
    >>> loss = lambda p, b: jnp.mean((b["x"] @ p["w"] + jnp.expand_dims(p["b"], 0) - b["y"]) ** 2)
    >>> p = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    >>> fisher_fast_path_leaves(loss, p, {"x": jnp.ones((4, 3)), "y": jnp.zeros((4, 2))})
    ['b', 'w']
  """
  paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  return [paths[k] for k in sorted(_trace(loss_fn, params, chunk).found)]
