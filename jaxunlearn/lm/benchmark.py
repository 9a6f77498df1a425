"""The benchmark's models (pretrain -> target / retain, cached with orbax) and their evaluation."""

from jaxunlearn._src.lm_eval import compare
from jaxunlearn._src.lm_eval import evaluate
from jaxunlearn._src.lm_eval import generations
from jaxunlearn._src.lm_eval import relearn_steps
from jaxunlearn._src.lm_eval import relearn_threshold
from jaxunlearn._src.lm_eval import score_answers
from jaxunlearn._src.lm_train import Models
from jaxunlearn._src.lm_train import TrainConfig
from jaxunlearn._src.lm_train import build
from jaxunlearn._src.lm_train import fit

__all__ = ("Models", "TrainConfig", "build", "compare", "evaluate", "fit", "generations", "relearn_steps", "relearn_threshold", "score_answers")
