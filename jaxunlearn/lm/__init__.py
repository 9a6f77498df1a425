"""Language-model unlearning: bring any Flax LM as ``logits_fn(params, input_ids) -> [B, T, V]``.

- ``jaxunlearn.lm.losses``: NLL, NPO, DPO, SimNPO, UNDIAL, KL and RMU losses on arrays, and loss
  builders for optax loops (Hugging Face batches: ``input_ids``, ``attention_mask``, ``labels``
  with -100 ignored).
- ``jaxunlearn.lm.metrics``: TOFU's and MUSE's metrics (truth ratio, forget quality, model
  utility, ROUGE-L, Min-K% and privleak, extraction strength) and Jang et al.'s.
- ``jaxunlearn.lm.models``: a reference decoder in Flax NNX and greedy generation with a KV cache.
- ``jaxunlearn.lm.tokenizer``: bytes, plus BOS/EOS/PAD.
- ``jaxunlearn.lm.data``: the TOFU-like world the package generates, and batching.
- ``jaxunlearn.lm.recipes``: the language-model unlearning methods (registry task ``"lm"``).
- ``jaxunlearn.lm.sharding``: FSDP-style parameter and batch placement on a mesh.
- ``jaxunlearn.lm.benchmark``: the cached pretrain / target / retain pipeline and the evaluation.
"""

from jaxunlearn.lm import benchmark
from jaxunlearn.lm import data
from jaxunlearn.lm import losses
from jaxunlearn.lm import metrics
from jaxunlearn.lm import models
from jaxunlearn.lm import recipes
from jaxunlearn.lm import sharding
from jaxunlearn.lm import tokenizer

__all__ = ("benchmark", "data", "losses", "metrics", "models", "recipes", "sharding", "tokenizer")
