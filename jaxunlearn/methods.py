"""The method registry: every unlearning method, its summary, citation, defaults, recipe and
N-models version. ``demo``, ``score``, the benchmarks and the examples iterate over it.

Example:
  >>> from jaxunlearn import methods
  >>> methods.get("ssd").defaults["alpha_scale"]
  0.5
  >>> methods.get("scrub_r").needs
  ('apply_fn', 'holdout')
  >>> "gradient_difference" in methods.names()
  True
"""

from jaxunlearn._src.lane_recipes import Stacked
from jaxunlearn._src.methods import Method
from jaxunlearn._src.methods import all_methods
from jaxunlearn._src.methods import get
from jaxunlearn._src.methods import names
from jaxunlearn._src.methods import parse
from jaxunlearn._src.methods import register
from jaxunlearn._src.methods import unregister

__all__ = ("Method", "Stacked", "all_methods", "get", "names", "parse", "register", "unregister")
