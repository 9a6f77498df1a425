"""Language-model unlearning recipes: recipe(lm, params, *, forget, retain, seed, **hyper) -> params."""

from jaxunlearn._src.lm_recipes import gradient_ascent
from jaxunlearn._src.lm_recipes import gradient_difference
from jaxunlearn._src.lm_recipes import idkdpo
from jaxunlearn._src.lm_knowledge import StoppingRuleWarning
from jaxunlearn._src.lm_knowledge import knowledge_unlearning
from jaxunlearn._src.lm_validation import Validation
from jaxunlearn._src.lm_validation import holdout_gap
from jaxunlearn._src.lm_recipes import npo
from jaxunlearn._src.lm_rmu import rmu
from jaxunlearn._src.lm_recipes import simnpo
from jaxunlearn._src.lm_recipes import undial

__all__ = ("StoppingRuleWarning", "Validation", "gradient_ascent", "gradient_difference", "holdout_gap", "idkdpo",
           "knowledge_unlearning", "npo", "rmu", "simnpo", "undial")
