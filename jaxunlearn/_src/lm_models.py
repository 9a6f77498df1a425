r"""A reference decoder-only language model in Flax NNX, its functional form, and greedy generation.

The decoder is the usual pre-norm transformer: token embedding; ``n_layers`` blocks of
:math:`x \leftarrow x + \mathrm{Attn}(\mathrm{RMSNorm}(x))`, :math:`x \leftarrow x +
\mathrm{MLP}(\mathrm{RMSNorm}(x))` with causal multi-head attention under rotary positions (RoPE,
Su et al. 2021) and a gated MLP :math:`W_d(\mathrm{silu}(W_g x) \odot W_u x)` (Shazeer 2020); a
final RMSNorm and an untied output head. Any other Flax LM enters the library through the same two
functions, ``logits_fn(params, input_ids) -> [B, T, V]`` and optionally ``hidden_fn(params,
input_ids) -> [B, T, D]``.

Attention is causal over *slots* (array positions), with a key mask for padding, and RoPE uses
the token's position among the real tokens: a left-padded prompt gives the same logits as the
unpadded one, which is what batched generation needs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn._src import lm_tokenizer as tok

Params = dict[str, Any]
_NEG = -1e9  # masked attention score (finite: a fully masked padding row stays finite)


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Sizes of the reference decoder (the defaults fit the generated benchmark on a CPU)."""

  vocab_size: int = tok.VOCAB_SIZE
  d_model: int = 128
  n_layers: int = 2
  n_heads: int = 4
  d_ff: int = 384
  max_len: int = 512
  rope_base: float = 10_000.0
  hidden_layer: int = 1  # the block whose output ``hidden_fn`` returns (0-based)

  def validate(self) -> None:
    if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
      raise ValueError(f"d_model {self.d_model} must split into {self.n_heads} heads of even size.")
    if not 0 <= self.hidden_layer < self.n_layers:
      raise ValueError(f"hidden_layer {self.hidden_layer} is not a layer of {self.n_layers}.")


class RMSNorm(nnx.Module):
  """:math:`x / \\sqrt{\\mathrm{mean}(x^2) + \\epsilon} \\cdot g` (Zhang and Sennrich 2019)."""

  def __init__(self, dim: int, *, eps: float = 1e-6):
    self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...].reshape((1,) * (y.ndim - 1) + (-1,))).astype(x.dtype)


def rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
  """Rotary embedding of ``x`` ``[B, T, H, Dh]`` at integer ``positions`` ``[B, T]`` (halves rotated)."""
  half = x.shape[-1] // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[:, :, None] * freqs[None, None, :]  # [B, T, half]
  cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


class Attention(nnx.Module):
  """Causal multi-head self-attention with RoPE and an optional key/value cache."""

  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    d = cfg.d_model
    init = nnx.initializers.normal(d ** -0.5)
    self.q, self.k, self.v = (nnx.Linear(d, d, use_bias=False, kernel_init=init, rngs=rngs) for _ in range(3))
    self.o = nnx.Linear(d, d, use_bias=False, kernel_init=nnx.initializers.normal((2 * cfg.n_layers * d) ** -0.5),
                        rngs=rngs)
    self.heads, self.base = cfg.n_heads, cfg.rope_base

  def __call__(self, x, positions, key_mask, cache=None, index=None):
    b, t, d = x.shape
    split = lambda y: y.reshape(b, t, self.heads, d // self.heads)  # noqa: E731
    q = rope(split(self.q(x)), positions, self.base)
    k = rope(split(self.k(x)), positions, self.base)
    v = split(self.v(x))
    if cache is None:
      keys, values, first = k, v, 0
    else:
      keys = jax.lax.dynamic_update_slice(cache[0], k.astype(cache.dtype), (0, index, 0, 0))
      values = jax.lax.dynamic_update_slice(cache[1], v.astype(cache.dtype), (0, index, 0, 0))
      cache, first = jnp.stack([keys, values]), index
    slots_q = first + jnp.arange(t)
    allowed = (jnp.arange(keys.shape[1])[None, :] <= slots_q[:, None])[None] & key_mask[:, None, :].astype(bool)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), keys.astype(jnp.float32)) / jnp.sqrt(d / self.heads)
    scores = jnp.where(allowed[:, None], scores, _NEG)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), values.astype(jnp.float32))
    return self.o(out.reshape(b, t, d).astype(x.dtype)), cache


class GatedMLP(nnx.Module):
  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    d, f = cfg.d_model, cfg.d_ff
    self.gate = nnx.Linear(d, f, use_bias=False, kernel_init=nnx.initializers.normal(d ** -0.5), rngs=rngs)
    self.up = nnx.Linear(d, f, use_bias=False, kernel_init=nnx.initializers.normal(d ** -0.5), rngs=rngs)
    self.down = nnx.Linear(f, d, use_bias=False, kernel_init=nnx.initializers.normal((2 * cfg.n_layers * f) ** -0.5),
                           rngs=rngs)

  def __call__(self, x):
    return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


class Block(nnx.Module):
  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    self.attn_norm, self.mlp_norm = RMSNorm(cfg.d_model), RMSNorm(cfg.d_model)
    self.attn, self.mlp = Attention(cfg, rngs=rngs), GatedMLP(cfg, rngs=rngs)

  def __call__(self, x, positions, key_mask, cache=None, index=None):
    a, cache = self.attn(self.attn_norm(x), positions, key_mask, cache, index)
    x = x + a
    return x + self.mlp(self.mlp_norm(x)), cache


class Decoder(nnx.Module):
  """The reference decoder. ``model(input_ids)`` gives logits ``[B, T, V]``; ``model.run`` is the
  full interface (positions, key mask, cache, hidden states)."""

  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    cfg.validate()
    self.cfg = cfg
    self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, embedding_init=nnx.initializers.normal(1.0), rngs=rngs)
    self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
    self.norm = RMSNorm(cfg.d_model)
    self.head = nnx.Linear(cfg.d_model, cfg.vocab_size, use_bias=False,
                           kernel_init=nnx.initializers.normal(cfg.d_model ** -0.5), rngs=rngs)

  def run(self, input_ids, positions, key_mask, cache=None, index=None):
    """``(logits [B, T, V], hidden [B, T, D] after block cfg.hidden_layer, new cache)``. ``cache``
    ``[L, 2, B, S, H, Dh]``: the tokens are written at slots ``index ..``; ``key_mask`` ``[B, S]``
    (``[B, T]`` without a cache) says which slots hold real tokens."""
    x = self.embed(input_ids)
    hidden, caches = None, []
    for i, block in enumerate(self.blocks):
      x, c = block(x, positions, key_mask, None if cache is None else cache[i], index)
      caches.append(c)
      if i == self.cfg.hidden_layer:
        hidden = x
    logits = self.head(self.norm(x)).astype(jnp.float32)
    return logits, hidden, None if cache is None else jnp.stack(caches)

  def __call__(self, input_ids):
    ids = jnp.asarray(input_ids)
    positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    return self.run(ids, positions, jnp.ones(ids.shape, bool))[0]


@dataclasses.dataclass(frozen=True)
class LM:
  """A language model as functions of a parameter pytree (a plain nested dict).

  Attributes:
    logits_fn: ``logits_fn(params, input_ids) -> [B, T, V]`` (float32).
    hidden_fn: ``hidden_fn(params, input_ids) -> [B, T, D]``, the residual stream after block
      ``config.hidden_layer`` (RMU's activations).
    params: the initial parameters.
    config: the sizes.
  """

  logits_fn: Callable[[Params, jax.Array], jax.Array]
  hidden_fn: Callable[[Params, jax.Array], jax.Array]
  params: Params
  config: DecoderConfig
  graphdef: Any = dataclasses.field(repr=False, default=None)

  def module(self, params: Params) -> Decoder:
    """The NNX module holding ``params``."""
    return _module(self.graphdef, params)


def _module(graphdef, params: Params) -> Decoder:
  return nnx.merge(graphdef, nnx.State(_as_state(params)), copy=True)


def _as_state(tree):
  return {k: _as_state(v) if isinstance(v, dict) else nnx.Param(v) for k, v in tree.items()}


def create(config: DecoderConfig | None = None, *, seed: int = 0) -> LM:
  r"""Builds the reference decoder: ``(logits_fn, hidden_fn, params, config)`` as an ``LM``.

  Example:
    >>> from jaxunlearn.lm import models, tokenizer
    >>> lm = models.create(models.DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64), seed=0)
    >>> ids = tokenizer.encode_batch(["Hello"], bos=True)[0]
    >>> lm.logits_fn(lm.params, ids).shape
    (1, 6, 259)
  """
  config = config or DecoderConfig()
  model = Decoder(config, rngs=nnx.Rngs(seed))
  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)

  def logits_fn(params: Params, input_ids: jax.Array) -> jax.Array:
    return _module(graphdef, params)(input_ids)

  def hidden_fn(params: Params, input_ids: jax.Array) -> jax.Array:
    ids = jnp.asarray(input_ids)
    positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    return _module(graphdef, params).run(ids, positions, jnp.ones(ids.shape, bool))[1]

  return LM(logits_fn, hidden_fn, params, config, graphdef)


# -- greedy generation ---------------------------------------------------------------------------
def _positions(mask: jax.Array) -> jax.Array:
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "eos_id", "pad_id"))
def _generate_cached(graphdef, params, prompts, prompt_mask, *, max_new_tokens, eos_id, pad_id):
  model = _module(graphdef, params)
  cfg = model.cfg
  b, p = prompts.shape
  slots = p + max_new_tokens
  cache = jnp.zeros((cfg.n_layers, 2, b, slots, cfg.n_heads, cfg.d_model // cfg.n_heads), jnp.float32)
  key_mask = jnp.zeros((b, slots), bool).at[:, :p].set(prompt_mask.astype(bool))
  logits, _, cache = model.run(prompts, _positions(prompt_mask), key_mask, cache, 0)
  first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
  last_pos = jnp.sum(prompt_mask, axis=1).astype(jnp.int32) - 1

  def step(carry, i):
    token, cache, key_mask, done = carry
    emit = jnp.where(done, pad_id, token)
    done = done | (token == eos_id)
    slot = p + i
    key_mask = key_mask.at[:, slot].set(True)
    logits, _, cache = model.run(token[:, None], (last_pos + 1 + i)[:, None], key_mask, cache, slot)
    nxt = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    return (nxt, cache, key_mask, done), emit

  init = (first, cache, key_mask, jnp.zeros((b,), bool))
  _, out = jax.lax.scan(step, init, jnp.arange(max_new_tokens))
  return out.T


def generate(lm: LM, params: Params, prompts: jax.Array, prompt_mask: jax.Array, *, max_new_tokens: int,
             eos_id: int = tok.EOS, pad_id: int = tok.PAD) -> jax.Array:
  """Greedy continuation of left-padded ``prompts`` ``[B, P]`` (``prompt_mask`` 1 on real tokens),
  with a key/value cache, jitted, batched: ``[B, max_new_tokens]`` token ids, ``pad_id`` after the
  first ``eos_id`` (which is kept).

  The first generated token comes from the prompt's last logits; each later one from one cached
  step. ``generate_uncached`` recomputes the whole sequence at every step (the reference).
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
  prompts, prompt_mask = jnp.asarray(prompts, jnp.int32), jnp.asarray(prompt_mask, jnp.int32)
  if prompts.shape[1] + max_new_tokens > lm.config.max_len:
    raise ValueError(f"prompt length {prompts.shape[1]} + {max_new_tokens} new tokens exceeds max_len "
                     f"{lm.config.max_len}.")
  return _generate_cached(lm.graphdef, params, prompts, prompt_mask, max_new_tokens=int(max_new_tokens),
                          eos_id=int(eos_id), pad_id=int(pad_id))


def generate_uncached(lm: LM, params: Params, prompts: jax.Array, prompt_mask: jax.Array, *, max_new_tokens: int,
                      eos_id: int = tok.EOS, pad_id: int = tok.PAD) -> jax.Array:
  """``generate`` without a cache: every step runs the whole sequence again (the sequence lives
  in a buffer of its final length; causal attention keeps the empty slots out). Slow; the
  reference the cached path is tested against."""
  prompts, prompt_mask = jnp.asarray(prompts, jnp.int32), jnp.asarray(prompt_mask, jnp.int32)
  b, p = prompts.shape
  seq = jnp.concatenate([prompts, jnp.full((b, max_new_tokens), pad_id, jnp.int32)], axis=1)
  mask = jnp.concatenate([prompt_mask, jnp.zeros((b, max_new_tokens), jnp.int32)], axis=1)
  full = _full_pass(lm.graphdef)
  done = jnp.zeros((b,), bool)
  out = []
  for i in range(max_new_tokens):
    logits = full(params, seq, mask)
    token = jnp.argmax(logits[:, p + i - 1], axis=-1).astype(jnp.int32)
    out.append(jnp.where(done, pad_id, token))
    done = done | (token == eos_id)
    seq, mask = seq.at[:, p + i].set(token), mask.at[:, p + i].set(1)
  return jnp.stack(out, axis=1)


@functools.lru_cache(maxsize=8)
def _full_pass(graphdef):
  @jax.jit
  def full(params, seq, mask):
    return _module(graphdef, params).run(seq, _positions(mask), mask)[0]

  return full
