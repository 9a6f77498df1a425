"""From text to batches: the prompt format of the benchmark and Hugging Face-style batches.

A QA is ``BOS "Q: {q}\\nA: "`` (the prompt, labels ``-100``) followed by
``"{answer}" EOS`` (the scored labels); batches are right-padded with PAD (labels ``-100``) to a
fixed length so that one compiled step serves every batch. Generation prompts are left-padded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from jaxunlearn._src import lm_tokenizer as tok
from jaxunlearn._src.lm_losses import IGNORE

Batch = dict[str, np.ndarray]


def prompt(question: str) -> str:
  return f"Q: {question}\nA: "


def qa_batch(questions: Sequence[str], answers: Sequence[str], *, length: int) -> Batch:
  """``{"input_ids", "attention_mask", "labels"}`` ``[N, length]``: prompt + answer + EOS, labels
  only on the answer and EOS. Raises if a pair does not fit in ``length`` tokens.

  Example:
    >>> from jaxunlearn.lm import data
    >>> labels = data.qa_batch(["Who?"], ["Me."], length=24)["labels"]
    >>> int((labels != -100).sum())  # "Me." and EOS
    4
  """
  if len(questions) != len(answers):
    raise ValueError(f"{len(questions)} questions for {len(answers)} answers.")
  ids = np.full((len(questions), length), tok.PAD, np.int32)
  labels = np.full((len(questions), length), IGNORE, np.int32)
  mask = np.zeros((len(questions), length), np.int32)
  for i, (q, a) in enumerate(zip(questions, answers)):
    p = tok.encode(prompt(q), bos=True)
    full = p + tok.encode(a, eos=True)
    if len(full) > length:
      raise ValueError(f"question and answer {i} take {len(full)} tokens, more than length={length}.")
    ids[i, :len(full)] = full
    mask[i, :len(full)] = 1
    labels[i, len(p):len(full)] = full[len(p):]
  return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def idk_batch(questions: Sequence[str], pool: Sequence[str], *, seed: int, length: int) -> Batch:
  """``questions`` each answered with a refusal drawn from ``pool`` (IdkDPO's preferred answers)."""
  if not pool:
    raise ValueError("the refusal pool is empty.")
  rng = np.random.default_rng(seed)
  return qa_batch(questions, [pool[int(i)] for i in rng.integers(0, len(pool), size=len(questions))], length=length)


def text_batch(texts: Sequence[str], *, length: int) -> Batch:
  """Plain texts (every token after BOS scored), right-padded to ``length``."""
  ids, mask = tok.encode_batch(texts, bos=True, eos=True, length=length)
  labels = np.where(mask == 1, ids, IGNORE).astype(np.int32)
  labels[:, 0] = IGNORE
  return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def prompts(questions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """Left-padded generation prompts ``(ids, mask)`` for ``questions``."""
  return tok.encode_batch([prompt(q) for q in questions], bos=True, left_pad=True)


def length_for(questions: Sequence[str], answers: Sequence[str], multiple: int = 16) -> int:
  """The smallest multiple of ``multiple`` that fits every prompt + answer + EOS."""
  longest = max(len(tok.encode(prompt(q), bos=True)) + len(tok.encode(a, eos=True)) for q, a in zip(questions, answers))
  return -(-longest // multiple) * multiple


def take(batch: Batch, rows) -> Batch:
  return {k: v[rows] for k, v in batch.items()}


def epoch_batches(batch: Batch, *, batch_size: int, seed: int, epoch: int) -> Iterator[Batch]:
  """One epoch of shuffled minibatches of exactly ``batch_size`` rows; the last one is filled
  with rows whose labels are all ignored (they add nothing to the loss or the gradient)."""
  n = len(batch["input_ids"])
  order = np.random.default_rng([seed, epoch]).permutation(n)
  for start in range(0, n, batch_size):
    rows = order[start:start + batch_size]
    out = take(batch, rows)
    pad = batch_size - len(rows)
    if pad:
      filler = take(batch, np.zeros(pad, np.int64))
      filler["labels"] = np.full_like(filler["labels"], IGNORE)
      out = {k: np.concatenate([out[k], filler[k]]) for k in out}
    yield out
