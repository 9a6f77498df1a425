"""Language-model unlearning recipes: recipe(lm, params, *, forget, retain, seed, **hyper) -> params."""

from jaxunlearn._src.lm_recipes import gradient_ascent
from jaxunlearn._src.lm_recipes import gradient_difference
from jaxunlearn._src.lm_recipes import idkdpo
from jaxunlearn._src.lm_recipes import npo
from jaxunlearn._src.lm_recipes import rmu
from jaxunlearn._src.lm_recipes import simnpo
from jaxunlearn._src.lm_recipes import undial

__all__ = ("gradient_ascent", "gradient_difference", "idkdpo", "npo", "rmu", "simnpo", "undial")
