"""Forget and retain objectives: builders returning ``loss(params, batch) -> scalar``."""

from jaxunlearn._src.losses import cross_entropy_loss
from jaxunlearn._src.losses import masked_mean
from jaxunlearn._src.losses import random_label_loss
from jaxunlearn._src.losses import teacher_kl_loss
from jaxunlearn._src.losses import uniform_kl_loss

__all__ = ("cross_entropy_loss", "masked_mean", "random_label_loss", "teacher_kl_loss", "uniform_kl_loss")
