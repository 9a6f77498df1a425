"""A byte-level tokenizer with no dependency: UTF-8 bytes 0..255 plus BOS, EOS and PAD.

Any tokenizer that produces integer ids works with ``jaxunlearn.lm``; this one ships so that the
package's benchmark and tests need nothing downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOS, EOS, PAD = 256, 257, 258
VOCAB_SIZE = 259


def encode(text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
  """The UTF-8 bytes of ``text`` as ids, with BOS/EOS if asked.

  Example:
    >>> from jaxunlearn.lm import tokenizer
    >>> tokenizer.encode("hé", bos=True)
    [256, 104, 195, 169]
  """
  if not isinstance(text, str):
    raise TypeError(f"encode takes a str, got {type(text).__name__}.")
  return ([BOS] if bos else []) + list(text.encode("utf-8")) + ([EOS] if eos else [])


def decode(ids: Sequence[int]) -> str:
  """Text of ``ids``: stops at the first EOS, skips BOS and PAD, replaces invalid UTF-8.

  Example:
    >>> from jaxunlearn.lm import tokenizer
    >>> tokenizer.decode(tokenizer.encode("Paris", bos=True, eos=True) + [tokenizer.PAD])
    'Paris'
  """
  out = bytearray()
  for i in np.asarray(ids).reshape(-1).tolist():
    if i == EOS:
      break
    if 0 <= i < 256:
      out.append(i)
    elif i not in (BOS, PAD):
      raise ValueError(f"id {i} is not a byte-tokenizer id (0..{VOCAB_SIZE - 1}).")
  return out.decode("utf-8", errors="replace")


def encode_batch(texts: Sequence[str], *, bos: bool = False, eos: bool = False, left_pad: bool = False,
                 length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``(ids [B, L], mask [B, L])`` padded with PAD to the longest (or ``length``), on the right, or
  on the left for generation prompts. Raises if a text is longer than ``length``."""
  rows = [encode(t, bos=bos, eos=eos) for t in texts]
  width = max((len(r) for r in rows), default=0) if length is None else length
  if any(len(r) > width for r in rows):
    raise ValueError(f"a text has {max(len(r) for r in rows)} tokens, more than length={width}.")
  ids = np.full((len(rows), width), PAD, np.int32)
  mask = np.zeros((len(rows), width), np.int32)
  for i, r in enumerate(rows):
    if left_pad:
      ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
    else:
      ids[i, :len(r)], mask[i, :len(r)] = r, 1
  return ids, mask
