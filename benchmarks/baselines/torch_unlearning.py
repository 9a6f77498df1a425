"""PyTorch baselines on the same architectures as ``jaxunlearn.models`` (channels first).

* ``per_example_fisher``: mean squared per-example gradient via ``torch.func`` (vmap of grad).
* ``batch_gradient_pass``: one backward pass per minibatch, gradients summed (the cost floor).
* ``ssd_importance`` / ``ssd_dampen``: Selective Synaptic Dampening as the original SSD code computes
  it (Foster et al., AAAI 2024): squared *minibatch* gradients averaged over batches, then each
  parameter with forget importance > alpha x full importance is scaled by
  min(1, dampening x full / forget).
* ``graddiff_steps``: gradient difference, each Adam step on CE(retain batch) - CE(forget batch).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


class MLP(nn.Module):
  def __init__(self, in_features: int, num_classes: int, hidden=(256, 256)):
    super().__init__()
    widths = [in_features, *hidden]
    self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
    self.head = nn.Linear(widths[-1], num_classes)

  def forward(self, x):
    x = x.reshape(x.shape[0], -1)
    for layer in self.hidden:
      x = F.relu(layer(x))
    return self.head(x)


class CNN(nn.Module):
  """Two blocks of 3-wide 'same' convolution, ReLU, 2-wide max pooling; dense hidden; head."""

  def __init__(self, input_shape, num_classes: int, channels=(32, 64), dense: int = 128):
    super().__init__()
    spatial, in_ch = tuple(input_shape[:-1]), int(input_shape[-1])
    conv = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
    self.pool = F.max_pool1d if len(spatial) == 1 else F.max_pool2d
    self.convs = nn.ModuleList()
    size = list(spatial)
    for ch in channels:
      self.convs.append(conv(in_ch, ch, 3, padding=1))
      in_ch = ch
      size = [max(1, s // 2) for s in size]
    self.fc = nn.Linear(int(np.prod(size)) * in_ch, dense)
    self.head = nn.Linear(dense, num_classes)

  def forward(self, x):
    for conv in self.convs:
      x = F.relu(conv(x))
      if all(s >= 2 for s in x.shape[2:]):
        x = self.pool(x, 2)
    return self.head(F.relu(self.fc(x.flatten(1))))


def to_torch(x: np.ndarray) -> torch.Tensor:
  """Channels-last NumPy inputs -> channels-first float tensors."""
  t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
  return t.movedim(-1, 1).contiguous() if t.ndim >= 3 else t


def per_example_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict:
  params = {k: v.detach() for k, v in model.named_parameters()}

  def loss(p, xi, yi):
    return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

  per_example = vmap(grad(loss), in_dims=(None, 0, 0))
  acc = {k: torch.zeros_like(v) for k, v in params.items()}
  with torch.no_grad():
    for s in range(0, len(x), batch_size):
      g = per_example(params, x[s:s + batch_size], y[s:s + batch_size])
      for k in acc:
        acc[k] += g[k].square().sum(0)
  return {k: v / len(x) for k, v in acc.items()}


def batch_gradient_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict:
  acc = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
  for s in range(0, len(x), batch_size):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x[s:s + batch_size]), y[s:s + batch_size]).backward()
    with torch.no_grad():
      for k, p in model.named_parameters():
        acc[k] += p.grad
  return acc


def ssd_importance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict:
  imp = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
  batches = 0
  for s in range(0, len(x), batch_size):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x[s:s + batch_size]), y[s:s + batch_size]).backward()
    with torch.no_grad():
      for k, p in model.named_parameters():
        imp[k] += p.grad.square()
    batches += 1
  return {k: v / batches for k, v in imp.items()}


def ssd_dampen(model: nn.Module, forget_imp: dict, full_imp: dict, alpha: float, dampening: float) -> None:
  with torch.no_grad():
    for k, p in model.named_parameters():
      where = forget_imp[k] > full_imp[k] * alpha
      factor = ((full_imp[k] * dampening) / forget_imp[k]).clamp(max=1.0)
      p[where] = p[where] * factor[where]


def ssd(model, forget, full, *, alpha: float, dampening: float, batch_size: int) -> None:
  ssd_dampen(model, ssd_importance(model, *forget, batch_size), ssd_importance(model, *full, batch_size),
             alpha, dampening)


def graddiff_steps(model: nn.Module, opt, forget, retain, *, steps: int, batch_size: int) -> None:
  (xf, yf), (xr, yr) = forget, retain
  nf, nr = len(xf), len(xr)
  for t in range(steps):
    r = slice((t * batch_size) % nr, (t * batch_size) % nr + batch_size)
    f = slice((t * batch_size) % nf, (t * batch_size) % nf + batch_size)
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(xr[r]), yr[r]) - F.cross_entropy(model(xf[f]), yf[f])
    loss.backward()
    opt.step()
