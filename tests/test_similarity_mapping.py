"""Similarity-based label mapping (Yen et al. 2021; reprogram_ext/mapping/similarity.py)."""
from __future__ import annotations

import pytest
import torch

from reprogram_ext.mapping import mean_prediction_mapping, mean_predictions, similarity_mapping


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_cosine_top_k_by_hand():
    target = torch.randn(4, 6, generator=gen(0))
    source = torch.randn(15, 6, generator=gen(1))
    index = similarity_mapping(target, source, k=3)
    for t in range(4):
        sims = [float(torch.dot(target[t], source[s]) / (target[t].norm() * source[s].norm())) for s in range(15)]
        best = sorted(range(15), key=lambda s: -sims[s])[:3]
        assert index[t].tolist() == best


def test_dot_metric_and_ties_lower_first():
    target = torch.tensor([[1.0, 0.0]])
    source = torch.tensor([[0.0, 1.0], [2.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    assert similarity_mapping(target, source, k=2, metric="dot").tolist() == [[1, 2]]
    assert similarity_mapping(target, source, k=3).tolist() == [[1, 2, 3]]  # cosine: three ties at 1


def test_mean_predictions_by_hand():
    logits = torch.randn(30, 8, generator=gen(2))
    target = torch.arange(30) % 3
    means = mean_predictions(logits, target, 3)
    p = torch.softmax(logits, 1)
    for t in range(3):
        torch.testing.assert_close(means[t], p[target == t].mean(0))
    index = mean_prediction_mapping(logits, target, 3, k=2)
    assert index.tolist() == [torch.sort(means[t], descending=True, stable=True).indices[:2].tolist() for t in range(3)]
    logit_means = mean_predictions(logits, target, 3, pre="none")
    torch.testing.assert_close(logit_means[1], logits[target == 1].mean(0))


def test_distinct_gives_each_source_once():
    logits = torch.zeros(6, 5)
    logits[:, 0] = 5.0  # every class prefers source 0
    target = torch.arange(6) % 3
    shared = mean_prediction_mapping(logits, target, 3, k=1)
    assert shared.tolist() == [[0], [0], [0]]
    distinct = mean_prediction_mapping(logits, target, 3, k=1, distinct=True)
    assert sorted(distinct.flatten().tolist()) == sorted(set(distinct.flatten().tolist()))
    assert distinct[0, 0] == 0  # the first maximum goes first (row-major order on ties)


def test_bad_input():
    with pytest.raises(ValueError, match="share E"):
        similarity_mapping(torch.randn(2, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match="k must be <= S=5"):
        similarity_mapping(torch.randn(2, 3), torch.randn(5, 3), k=6)
    with pytest.raises(ValueError, match="distinct=True needs k\\*T <= S"):
        similarity_mapping(torch.randn(3, 3), torch.randn(5, 3), k=2, distinct=True)
    with pytest.raises(ValueError, match="metric must be one of"):
        similarity_mapping(torch.randn(2, 3), torch.randn(5, 3), metric="l2")
    with pytest.raises(ValueError, match="target class 2 has no sample"):
        mean_prediction_mapping(torch.randn(4, 5), torch.tensor([0, 1, 0, 1]), 3)
    with pytest.raises(ValueError, match=r"target must hold classes in \[0, T=2\)"):
        mean_prediction_mapping(torch.randn(3, 5), torch.tensor([0, 1, 2]), 2)
