"""Datasets with stable example ids, forget-set selection and deterministic batching."""

from jaxunlearn._src.data import Dataset
from jaxunlearn._src.data import EMBEDDED_DATASETS
from jaxunlearn._src.data import Splits
from jaxunlearn._src.data import as_ids
from jaxunlearn._src.data import batches
from jaxunlearn._src.data import check_ids
from jaxunlearn._src.data import class_ids
from jaxunlearn._src.data import flip_labels
from jaxunlearn._src.data import id_order
from jaxunlearn._src.data import load
from jaxunlearn._src.data import num_batches
from jaxunlearn._src.data import parse_forget
from jaxunlearn._src.data import random_ids
from jaxunlearn._src.data import read_ids_file
from jaxunlearn._src.data import split_forget
from jaxunlearn._src.data import stamp_trigger

__all__ = (
    "Dataset",
    "EMBEDDED_DATASETS",
    "Splits",
    "as_ids",
    "batches",
    "check_ids",
    "class_ids",
    "flip_labels",
    "id_order",
    "load",
    "num_batches",
    "parse_forget",
    "random_ids",
    "read_ids_file",
    "split_forget",
    "stamp_trigger",
)
