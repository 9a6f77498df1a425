"""Small reference Flax NNX models, and their functional ``(apply, params)`` form."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxunlearn._src.base import ApplyFn, Params, PRNGKey

MODEL_NAMES = ("mlp", "cnn")


class MLP(nnx.Module):
  """A ReLU multilayer perceptron over flattened inputs.

  Args:
    in_features: size of one flattened input.
    num_classes: number of output logits.
    hidden: widths of the hidden layers.
    rngs: NNX random streams for initialisation.
    dtype: parameter and compute dtype.
  """

  def __init__(
      self,
      in_features: int,
      num_classes: int,
      *,
      hidden: Sequence[int] = (256, 256),
      rngs: nnx.Rngs,
      dtype=jnp.float32,
  ):
    widths = [in_features, *hidden]
    self.hidden = nnx.List(
        [nnx.Linear(a, b, rngs=rngs, dtype=dtype, param_dtype=dtype) for a, b in zip(widths[:-1], widths[1:])]
    )
    self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs, dtype=dtype, param_dtype=dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for layer in self.hidden:
      x = nnx.relu(layer(x))
    return self.head(x)


class CNN(nnx.Module):
  """A small convolutional network for 1-D signals ``(L, C)`` or images ``(H, W, C)``.

  Two blocks of 3-wide 'SAME' convolution, ReLU and 2-wide max pooling, then a hidden dense layer.

  Args:
    input_shape: shape of one input example, channels last.
    num_classes: number of output logits.
    channels: output channels of the two convolution blocks.
    dense: width of the hidden dense layer.
    rngs: NNX random streams for initialisation.
    dtype: parameter and compute dtype.
  """

  def __init__(
      self,
      input_shape: Sequence[int],
      num_classes: int,
      *,
      channels: Sequence[int] = (32, 64),
      dense: int = 128,
      rngs: nnx.Rngs,
      dtype=jnp.float32,
  ):
    spatial, in_ch = tuple(input_shape[:-1]), int(input_shape[-1])
    if len(spatial) not in (1, 2):
      raise ValueError(f"CNN takes (L, C) or (H, W, C) inputs, got input_shape {tuple(input_shape)}.")
    kernel = (3,) * len(spatial)
    convs, size = [], list(spatial)
    for ch in channels:
      convs.append(nnx.Conv(in_ch, ch, kernel, padding="SAME", rngs=rngs, dtype=dtype, param_dtype=dtype))
      in_ch = ch
      size = [max(1, s // 2) for s in size]
    self.convs = nnx.List(convs)
    flat = int(np.prod(size)) * in_ch
    self.fc = nnx.Linear(flat, dense, rngs=rngs, dtype=dtype, param_dtype=dtype)
    self.head = nnx.Linear(dense, num_classes, rngs=rngs, dtype=dtype, param_dtype=dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    for conv in self.convs:
      x = nnx.relu(_conv_same(x, conv.kernel[...], conv.bias[...]))
      if all(s >= 2 for s in x.shape[1:-1]):
        x = _max_pool2(x)
    x = x.reshape(x.shape[0], -1)
    x = nnx.relu(self.fc(x))
    return self.head(x)


# XLA:CPU runs the backward passes of `conv_general_dilated` (for few input channels) and of
# `reduce_window` max pooling slowly: measured on a 2-core CPU, a 3->32 channel 32x32 convolution's
# weight gradient 44 ms vs 17 ms, 2x2 pooling's gradient 45 ms vs 5.5 ms for the formulations
# below (benchmarks/results/vs_torch.md). They compute the same functions: a 'SAME' convolution as
# a matmul over shifted copies of the input (im2col by slicing), pooling as reshape + max.
def _conv_same(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """'SAME' stride-1 convolution, channels last, ``kernel`` ``[*window, C_in, C_out]``."""
  window = kernel.shape[:-2]
  spatial = x.shape[1:-1]
  pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in window] + [(0, 0)]
  xp = jnp.pad(x, pads)
  cols = []
  for offset in np.ndindex(*window):
    index = (slice(None),) + tuple(slice(o, o + n) for o, n in zip(offset, spatial)) + (slice(None),)
    cols.append(xp[index])
  patches = jnp.concatenate(cols, axis=-1)  # features ordered (window position, C_in), like the kernel
  w = kernel.reshape(-1, kernel.shape[-1])
  return patches @ w + bias.reshape((1,) * (patches.ndim - 1) + (-1,))


def _max_pool2(x: jax.Array) -> jax.Array:
  """2-wide, stride-2 max pooling over every spatial axis (an odd last row/column is dropped)."""
  spatial = x.shape[1:-1]
  even = tuple(2 * (n // 2) for n in spatial)
  x = x[(slice(None),) + tuple(slice(0, e) for e in even) + (slice(None),)]
  shape = [x.shape[0]]
  for e in even:
    shape += [e // 2, 2]
  x = x.reshape(shape + [x.shape[-1]])
  return jnp.max(x, axis=tuple(2 + 2 * i for i in range(len(even))))


def functional(module: nnx.Module) -> tuple[ApplyFn, Params]:
  """Splits an NNX module into a pure ``apply(params, x) -> logits`` and its parameters.

  The parameters are a plain nested dict of arrays (``nnx.to_pure_dict`` of the ``nnx.Param``
  state), e.g. ``{"hidden": {0: {"kernel": ..., "bias": ...}}, "head": {...}}``.

  The module must hold no mutable state besides its parameters (no batch statistics, no RNG
  counters), so that ``apply`` is a pure function; non-parameter variables are captured as
  constants.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxunlearn import models
    >>> apply, params = models.functional(models.MLP(64, 10, rngs=nnx.Rngs(0)))
    >>> apply(params, jnp.zeros((2, 8, 8, 1))).shape
    (2, 10)
  """
  graphdef, state, rest = nnx.split(module, nnx.Param, ...)
  params = nnx.to_pure_dict(state)

  def apply(params: Params, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, params, rest)(x)

  return apply, params


def create(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    key: PRNGKey,
    dtype=jnp.float32,
    **kwargs,
) -> tuple[ApplyFn, Params]:
  """Builds a reference model by name and returns its functional form ``(apply, params)``.

  Args:
    name: ``"mlp"`` or ``"cnn"``.
    input_shape: shape of one input example.
    num_classes: number of classes.
    key: PRNG key for the initial parameters.
    dtype: parameter dtype (``float32`` or ``bfloat16``).
    **kwargs: passed to the model (``hidden=`` for the MLP; ``channels=``, ``dense=`` for the CNN).

  Returns:
    ``(apply, params)`` with ``apply(params, x) -> logits``.

  Example:
    >>> import jax
    >>> from jaxunlearn import models
    >>> apply, params = models.create("cnn", (8, 8, 1), 10, key=jax.random.key(0))
    >>> apply(params, jax.numpy.zeros((4, 8, 8, 1))).shape
    (4, 10)
  """
  rngs = nnx.Rngs(params=key)
  if name == "mlp":
    module: nnx.Module = MLP(int(np.prod(input_shape)), num_classes, rngs=rngs, dtype=dtype, **kwargs)
  elif name == "cnn":
    module = CNN(input_shape, num_classes, rngs=rngs, dtype=dtype, **kwargs)
  else:
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}.")
  return functional(module)


def init_fn(name: str, input_shape: Sequence[int], num_classes: int, **kwargs):
  """Returns ``init(key) -> params`` for a reference model (fresh parameters, same structure)."""

  def init(key: PRNGKey) -> Params:
    return create(name, input_shape, num_classes, key=key, **kwargs)[1]

  return init
