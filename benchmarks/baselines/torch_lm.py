"""The package's reference decoder and its unlearning steps written in plain PyTorch, for
``benchmarks/lm_vs_torch.py``.

The same architecture as ``jaxunlearn.lm.models`` (pre-norm blocks, RMSNorm, RoPE, causal multi-head
attention, gated MLP, untied head), loaded from the JAX parameters so that both sides compute the
same function (the benchmark checks the logits agree). Written as a PyTorch user would: weights
as tensors multiplied as ``x @ W``, ``torch.nn.functional.scaled_dot_product_attention`` with
``is_causal=True`` (PyTorch's fastest attention on this CPU; the training batches are
right-padded, so causal masking alone is the reference decoder's mask), ``torch.optim.AdamW``.
The losses follow open-unlearning's code: NPO computes the reference model's log-probabilities
inside every step (``npo_reference="step"``) unless they are given precomputed (``"cached"``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = -100


def from_jax(params) -> dict[str, torch.Tensor]:
  """The JAX parameter dict as a flat dict of float32 tensors named by path (``blocks/0/mlp/down``)."""
  flat = {}

  def walk(tree, prefix):
    for k, v in tree.items():
      name = f"{prefix}/{k}" if prefix else str(k)
      if isinstance(v, dict):
        walk(v, name)
      else:
        flat[name.removesuffix("/kernel").removesuffix("/embedding").removesuffix("/scale")] = \
            torch.tensor(np.asarray(v, np.float32))
  walk(params, "")
  return flat


class Decoder:
  """``logits(ids)`` and ``hidden(ids, layer)`` of the reference decoder over ``params``."""

  def __init__(self, params: dict[str, torch.Tensor], *, n_layers: int, n_heads: int, rope_base: float = 10_000.0):
    self.p, self.n_layers, self.heads, self.base = params, n_layers, n_heads, rope_base

  @staticmethod
  def _norm(x, g, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g

  def _rope(self, x):  # x [B, T, H, Dh], positions 0..T-1 (right-padded batches)
    t, half = x.shape[1], x.shape[-1] // 2
    freqs = self.base ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = torch.arange(t, dtype=torch.float32)[:, None] * freqs[None, :]
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

  def _block(self, x, i):
    p, (b, t, d) = self.p, x.shape
    h = self._norm(x, p[f"blocks/{i}/attn_norm"])
    split = lambda y: y.view(b, t, self.heads, d // self.heads)  # noqa: E731
    q, k = self._rope(split(h @ p[f"blocks/{i}/attn/q"])), self._rope(split(h @ p[f"blocks/{i}/attn/k"]))
    v = split(h @ p[f"blocks/{i}/attn/v"])
    a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    x = x + a.transpose(1, 2).reshape(b, t, d) @ p[f"blocks/{i}/attn/o"]
    h = self._norm(x, p[f"blocks/{i}/mlp_norm"])
    return x + (F.silu(h @ p[f"blocks/{i}/mlp/gate"]) * (h @ p[f"blocks/{i}/mlp/up"])) @ p[f"blocks/{i}/mlp/down"]

  def logits(self, ids):
    x = self.p["embed"][ids]
    for i in range(self.n_layers):
      x = self._block(x, i)
    return self._norm(x, self.p["norm"]) @ self.p["head"]

  def hidden(self, ids, layer: int):
    """The residual stream after block ``layer`` (the blocks after it are not run)."""
    x = self.p["embed"][ids]
    for i in range(layer + 1):
      x = self._block(x, i)
    return x


def sequence_nll(logits, labels):
  """Summed next-token NLL per row over the scored labels (open-unlearning's ``compute_batch_nll``)."""
  target = labels[:, 1:]
  lp = F.cross_entropy(logits[:, :-1].transpose(1, 2), target.clamp(min=0), reduction="none")
  return (lp * (target != IGNORE)).sum(-1)


def mean_nll(logits, labels):
  target = labels[:, 1:]
  return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)


def copy_params(params: dict[str, torch.Tensor], trainable: set[str] | None = None) -> dict[str, torch.Tensor]:
  out = {}
  for k, v in params.items():
    out[k] = v.clone().requires_grad_(trainable is None or k in trainable)
  return out


def gradient_difference_step(model: Decoder, opt, fb, rb, *, retain_weight: float):
  opt.zero_grad(set_to_none=True)
  loss = -mean_nll(model.logits(fb["input_ids"]), fb["labels"]) + retain_weight * mean_nll(
      model.logits(rb["input_ids"]), rb["labels"])
  loss.backward()
  opt.step()
  return loss


def npo_step(model: Decoder, reference: Decoder, opt, fb, rb, *, beta: float, ref_nll=None):
  """NPO + retain NLL; the reference log-probs are computed here unless ``ref_nll`` is given."""
  if ref_nll is None:
    with torch.no_grad():
      ref_nll = sequence_nll(reference.logits(fb["input_ids"]), fb["labels"])
  opt.zero_grad(set_to_none=True)
  log_ratio = ref_nll - sequence_nll(model.logits(fb["input_ids"]), fb["labels"])
  forget = (-(2.0 / beta) * F.logsigmoid(-beta * log_ratio)).mean()
  loss = forget + mean_nll(model.logits(rb["input_ids"]), rb["labels"])
  loss.backward()
  opt.step()
  return loss


def _masked_mse(acts, target, mask):
  sq = (acts - target).pow(2).mean(-1)
  m = mask.float()
  return ((sq * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()


def rmu_step(model: Decoder, frozen: Decoder, opt, fb, rb, *, control, layer: int, alpha: float):
  with torch.no_grad():
    target = frozen.hidden(rb["input_ids"], layer)
  opt.zero_grad(set_to_none=True)
  loss = _masked_mse(model.hidden(fb["input_ids"], layer), control, fb["labels"] != IGNORE) + alpha * _masked_mse(
      model.hidden(rb["input_ids"], layer), target, rb["labels"] != IGNORE)
  loss.backward()
  opt.step()
  return loss


def adamw(params: dict[str, torch.Tensor], lr: float, weight_decay: float):
  return torch.optim.AdamW([v for v in params.values() if v.requires_grad], lr=lr, weight_decay=weight_decay,
                           eps=1e-8, foreach=True)


def control_vector(dim: int, steering: float, seed: int) -> torch.Tensor:
  u = np.random.default_rng(seed).uniform(size=dim)
  return torch.tensor(steering * u / math.sqrt(float(np.sum(u * u))), dtype=torch.float32)
