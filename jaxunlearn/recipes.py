"""Complete unlearning procedures with one signature:
``recipe(loss_fn, params, *, forget, retain, seed, **hyper) -> params``.

Each is named like its entry in ``jaxunlearn.methods``; the defaults of ``**hyper`` are those of
the signatures here (the registry reads them from there).
"""

from jaxunlearn._src.recipes import as_dataset
from jaxunlearn._src.recipes import finetune
from jaxunlearn._src.recipes import gradient_ascent
from jaxunlearn._src.recipes import gradient_difference
from jaxunlearn._src.recipes import reset_repair
from jaxunlearn._src.recipes import ssd

__all__ = ("as_dataset", "finetune", "gradient_ascent", "gradient_difference", "reset_repair", "ssd")
