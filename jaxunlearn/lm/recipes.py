"""Language-model unlearning recipes: recipe(lm, params, *, forget, retain, seed, **hyper) -> params."""

from jaxunlearn._src.lm_recipes import gradient_ascent
from jaxunlearn._src.lm_recipes import gradient_difference

__all__ = ("gradient_ascent", "gradient_difference")
