"""Reference Flax NNX models and their functional ``(apply, params)`` form."""

from jaxunlearn._src.models import CNN
from jaxunlearn._src.models import MLP
from jaxunlearn._src.models import MODEL_NAMES
from jaxunlearn._src.models import create
from jaxunlearn._src.models import functional
from jaxunlearn._src.models import init_fn

__all__ = ("CNN", "MLP", "MODEL_NAMES", "create", "functional", "init_fn")
