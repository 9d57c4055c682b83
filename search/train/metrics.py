"""Classification metrics from a confusion matrix, and the objective value a space asks for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from search.core.spec import ObjectiveSpec, positive_index  # noqa: F401 - positive_index: re-exported


@dataclass
class Metrics:
    """Metrics of one split. ``confusion[i][j]``: images of true class i predicted as j."""

    confusion: list[list[int]]
    loss: float

    @property
    def n(self) -> int:
        return int(sum(map(sum, self.confusion)))

    @property
    def accuracy(self) -> float:
        return sum(self.confusion[i][i] for i in range(len(self.confusion))) / max(1, self.n)

    def per_class(self) -> tuple[list[float], list[float], list[float]]:
        """Precision, recall and F1 per class (0 where undefined)."""
        k = len(self.confusion)
        tp = [self.confusion[i][i] for i in range(k)]
        predicted = [sum(self.confusion[r][i] for r in range(k)) for i in range(k)]
        actual = [sum(self.confusion[i]) for i in range(k)]
        precision = [tp[i] / predicted[i] if predicted[i] else 0.0 for i in range(k)]
        recall = [tp[i] / actual[i] if actual[i] else 0.0 for i in range(k)]
        f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall)]
        return precision, recall, f1

    def score(self, metric: str, average: str = "macro", positive: int | None = None) -> float:
        if metric == "accuracy":
            return self.accuracy
        precision, recall, f1 = self.per_class()
        values = {"precision": precision, "recall": recall, "f1": f1}[metric]
        if average == "binary":
            assert positive is not None
            return values[positive]
        if average == "micro":
            # Single-label classification: micro precision = recall = F1 = accuracy.
            return self.accuracy
        present = [i for i, row in enumerate(self.confusion) if sum(row) > 0]
        return sum(values[i] for i in present) / max(1, len(present))

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        precision, recall, f1 = self.per_class()
        return {
            "n": self.n,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "precision_macro": self.score("precision"),
            "recall_macro": self.score("recall"),
            "f1_macro": self.score("f1"),
            "per_class": {c: {"precision": p, "recall": r, "f1": f} for c, p, r, f in zip(classes, precision, recall, f1)},
            "confusion": self.confusion,
        }


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int) -> list[list[int]]:
    flat = torch.bincount(y_true.long() * num_classes + y_pred.long(), minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes).tolist()


def objective_value(spec: ObjectiveSpec, metrics: Metrics, classes: Sequence[str],
                    costs: dict[str, float] | None = None) -> float:
    if spec.metric in ("latency_ms", "params"):
        assert costs is not None
        return float(costs[spec.metric])
    return metrics.score(spec.metric, spec.average, positive_index(spec, classes))
