"""The TOFU-like world the package generates (``generate``), and text to batches."""

from jaxunlearn._src.lm_data import epoch_batches
from jaxunlearn._src.lm_data import idk_batch
from jaxunlearn._src.lm_data import length_for
from jaxunlearn._src.lm_data import prompt
from jaxunlearn._src.lm_data import prompts
from jaxunlearn._src.lm_data import qa_batch
from jaxunlearn._src.lm_data import text_batch
from jaxunlearn._src.lm_world import ATTRIBUTES
from jaxunlearn._src.lm_world import QA
from jaxunlearn._src.lm_world import SPLITS
from jaxunlearn._src.lm_world import World
from jaxunlearn._src.lm_world import WorldConfig
from jaxunlearn._src.lm_world import generate

__all__ = ("ATTRIBUTES", "QA", "SPLITS", "World", "WorldConfig", "epoch_batches", "generate", "idk_batch", "length_for", "prompt",
           "prompts", "qa_batch", "text_batch")
