"""Exact kNN forgetting: a k-nearest-neighbour classifier whose ``forget`` deletes rows, so that
its answers equal those of an index built without them. See ``KNNClassifier``."""

from jaxunlearn._src.knn import KNNClassifier

__all__ = ("KNNClassifier",)
