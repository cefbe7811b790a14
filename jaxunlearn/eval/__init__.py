"""Evaluation: accuracies, per-example losses and membership inference.

All functions take numpy logits / scores (compute logits with
``jaxunlearn.train.predict``) and return plain Python numbers or numpy arrays.
"""

from jaxunlearn.eval._basic import accuracy, per_example_loss
from jaxunlearn.eval._mia import mia_logreg
from jaxunlearn.eval._summary import evaluate_split

__all__ = ["accuracy", "evaluate_split", "mia_logreg", "per_example_loss"]
