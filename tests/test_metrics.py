"""Metrics agree with scikit-learn; objectives pick the right number."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix as sk_confusion, precision_recall_fscore_support

from search.core.errors import UserError
from search.space.parse import ObjectiveSpec
from search.train.metrics import Metrics, confusion_matrix, objective_value


def test_metrics_match_sklearn() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (300,), generator=g)
    p = torch.where(torch.rand(300, generator=g) < 0.6, y, torch.randint(0, 4, (300,), generator=g))
    p[p == 3] = 2  # class 3 is never predicted: precision undefined -> 0, as sklearn's zero_division=0
    m = Metrics(confusion=confusion_matrix(y, p, 4), loss=0.0)
    assert m.confusion == sk_confusion(y, p, labels=range(4)).tolist()
    assert m.accuracy == pytest.approx(accuracy_score(y, p))
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, labels=range(4), zero_division=0)
    ours = m.per_class()
    for a, b in zip(ours, (prec, rec, f1)):
        assert a == pytest.approx(list(b))
    for avg in ("macro", "micro"):
        ref = precision_recall_fscore_support(y, p, average=avg, zero_division=0)
        assert m.score("precision", avg) == pytest.approx(ref[0])
        assert m.score("recall", avg) == pytest.approx(ref[1])
        assert m.score("f1", avg) == pytest.approx(ref[2])
    ref_bin = precision_recall_fscore_support(y == 1, p == 1, average="binary", zero_division=0)
    assert m.score("precision", "binary", 1) == pytest.approx(ref_bin[0])


def test_objective_value_resolves_positive_class() -> None:
    m = Metrics(confusion=[[8, 2], [1, 4]], loss=0.0)
    classes = ["other", "target"]
    assert objective_value(ObjectiveSpec("precision", "binary", "target"), m, classes) == pytest.approx(4 / 6)
    assert objective_value(ObjectiveSpec("recall", "binary", 1), m, classes) == pytest.approx(4 / 5)
    assert objective_value(ObjectiveSpec("accuracy"), m, classes) == pytest.approx(12 / 15)
    with pytest.raises(UserError, match="positive_class 'defect' is not a class"):
        objective_value(ObjectiveSpec("precision", "binary", "defect"), m, classes)
