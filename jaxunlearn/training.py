"""A deterministic optax training loop and batched prediction."""

from jaxunlearn._src.training import accuracy
from jaxunlearn._src.training import dataset_accuracy
from jaxunlearn._src.training import fit
from jaxunlearn._src.training import predict

__all__ = ("accuracy", "dataset_accuracy", "fit", "predict")
