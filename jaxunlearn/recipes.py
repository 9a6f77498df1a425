"""Complete unlearning procedures with one signature:
``recipe(loss_fn, params, *, forget, retain, seed, **hyper) -> params``.

Each is named like its entry in ``jaxunlearn.methods``; the defaults of ``**hyper`` are those of
the signatures here (the registry reads them from here). Recipes that read the model's
predictions take ``apply_fn=``; those that draw fresh parameters take ``init_fn=``; SCRUB+R takes
``holdout=`` (``Method.needs`` lists them).
"""

from jaxunlearn._src.adversarial import amun
from jaxunlearn._src.adversarial import aru
from jaxunlearn._src.distill import bad_teacher
from jaxunlearn._src.distill import kl_ascent
from jaxunlearn._src.distill import scrub
from jaxunlearn._src.distill import scrub_r
from jaxunlearn._src.recipes import as_dataset
from jaxunlearn._src.recipes import finetune
from jaxunlearn._src.recipes import gradient_ascent
from jaxunlearn._src.recipes import gradient_difference
from jaxunlearn._src.recipes import reset_repair
from jaxunlearn._src.recipes import ssd
from jaxunlearn._src.relabel import random_label
from jaxunlearn._src.relabel import salun
from jaxunlearn._src.sparse import fisher_forgetting
from jaxunlearn._src.sparse import l1_sparse
from jaxunlearn._src.sparse import noise_finetune
from jaxunlearn._src.sparse import prune_finetune

__all__ = ("amun", "aru", "as_dataset", "bad_teacher", "finetune", "fisher_forgetting", "gradient_ascent",
           "gradient_difference", "kl_ascent", "l1_sparse", "noise_finetune", "prune_finetune", "random_label",
           "reset_repair", "salun", "scrub", "scrub_r", "ssd")
