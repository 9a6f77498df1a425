"""Datasets with stable example ids, forget-set selection and deterministic batching."""

from jaxunlearn._src.data import Dataset
from jaxunlearn._src.data import Splits
from jaxunlearn._src.data import as_ids
from jaxunlearn._src.data import batches
from jaxunlearn._src.data import check_ids
from jaxunlearn._src.data import id_order
from jaxunlearn._src.data import num_batches
from jaxunlearn._src.loaders import EMBEDDED_DATASETS
from jaxunlearn._src.loaders import load
from jaxunlearn._src.selection import class_ids
from jaxunlearn._src.selection import add_trigger
from jaxunlearn._src.selection import flip_labels
from jaxunlearn._src.selection import random_ids
from jaxunlearn._src.selection import split_forget
from jaxunlearn._src.selection import stamp_trigger

__all__ = (
    "Dataset",
    "EMBEDDED_DATASETS",
    "Splits",
    "as_ids",
    "batches",
    "check_ids",
    "class_ids",
    "add_trigger",
    "flip_labels",
    "id_order",
    "load",
    "num_batches",
    "random_ids",
    "split_forget",
    "stamp_trigger",
)
