"""A small interpreter for jaxprs: a traced program flattened to equations on integer tokens
(nested ``jit`` calls inlined), and run again with chosen outputs perturbed and chosen operands
recorded. The fast Fisher (``fastfisher``) analyses the flat program and differentiates through
``evaluate``; nothing here knows about layers or parameters.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

from jax.extend import core as jex_core

_INLINE = {"pjit", "jit", "closed_call", "core_call"}


class Eqn(NamedTuple):
  primitive: Any
  ins: tuple  # int tokens or ("lit", value)
  outs: tuple
  params: dict
  in_avals: tuple
  out_avals: tuple


def flatten(closed) -> tuple[list[Eqn], list[int], list[tuple[int, Any]], list[int]]:
  """Flat equations with integer tokens, nested jit calls inlined.

  Returns (eqns, invar tokens, [(const token, value)], outvar tokens).
  """
  counter = itertools.count()
  eqns: list[Eqn] = []

  def atom(env, a):
    if isinstance(a, jex_core.Literal):
      return ("lit", a.val)
    return env[a]

  def walk(jaxpr, env):
    for e in jaxpr.eqns:
      ins = tuple(atom(env, a) for a in e.invars)
      if e.primitive.name in _INLINE and "jaxpr" in e.params:
        inner = e.params["jaxpr"]
        inner_jaxpr = inner.jaxpr if hasattr(inner, "jaxpr") else inner
        inner_env = {}
        consts = getattr(inner, "consts", ())
        for v, c in zip(inner_jaxpr.constvars, consts):
          tok = next(counter)
          const_tokens.append((tok, c))
          inner_env[v] = tok
        for v, t in zip(inner_jaxpr.invars, ins):
          if isinstance(t, tuple):  # a literal passed into the call: bind it as a constant
            tok = next(counter)
            const_tokens.append((tok, t[1]))
            t = tok
          inner_env[v] = t
        walk(inner_jaxpr, inner_env)
        for v, a in zip(e.outvars, inner_jaxpr.outvars):
          env[v] = atom(inner_env, a)
        continue
      outs = []
      for v in e.outvars:
        tok = next(counter)
        env[v] = tok
        outs.append(tok)
      eqns.append(Eqn(e.primitive, ins, tuple(outs), dict(e.params),
                       tuple(getattr(a, "aval", None) for a in e.invars), tuple(v.aval for v in e.outvars)))

  const_tokens: list[tuple[int, Any]] = []
  env = {}
  for v, c in zip(closed.jaxpr.constvars, closed.consts):
    tok = next(counter)
    env[v] = tok
    const_tokens.append((tok, c))
  in_tokens = []
  for v in closed.jaxpr.invars:
    tok = next(counter)
    env[v] = tok
    in_tokens.append(tok)
  walk(closed.jaxpr, env)
  out_tokens = [atom(env, a) for a in closed.jaxpr.outvars]
  return eqns, in_tokens, const_tokens, out_tokens


def evaluate(eqns, in_tokens, const_tokens, out_tokens, args, perturb: dict[int, Any], record: dict[int, int]):
  """Runs the flat program, adding ``perturb[i]`` to equation i's output and keeping operand
  ``record[i]`` of equation i."""
  env = dict(const_tokens)
  env.update(zip(in_tokens, args))
  recorded = {}
  read = lambda t: t[1] if isinstance(t, tuple) else env[t]  # noqa: E731
  for i, e in enumerate(eqns):
    vals = [read(t) for t in e.ins]
    if i in record:
      recorded[i] = vals[record[i]]
    out = e.primitive.bind(*vals, **e.primitive.get_bind_params(e.params))
    out = out if e.primitive.multiple_results else [out]
    if i in perturb:
      out = [out[0] + perturb[i]]
    env.update(zip(e.outs, out))
  return [read(t) for t in out_tokens], recorded
