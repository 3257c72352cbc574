"""BAR's focal loss and top-30 multi-label mapping (reprogram_ext/blackbox/bar.py) against transcriptions
of the original code (yunyuntsai/Black-box-Adversarial-Reprogramming: cal_func.py, mapping_func.py)."""
import math

import numpy as np
import pytest
import torch

from reprogram_ext.blackbox.bar import bar_focal_loss, bar_frequency_mapping


def original_multi_focal_loss(gamma, alpha, y_true, y_pred):
    """cal_func.multi_focal_loss, per sample: mean over classes of alpha_t (1 - y_t)^gamma (-log y_t)."""
    out = []
    for y_row, p_row in zip(y_true, y_pred):
        terms = []
        for y, p in zip(y_row, p_row):
            p = min(max(p, 1e-7), 1 - 1e-7)
            a_t = y * alpha + (1 - y) * (1 - alpha)
            y_t = y * p + (1 - y) * (1 - p)
            terms.append((1 - y_t) ** gamma * -math.log(y_t) * a_t)
        out.append(sum(terms) / len(terms))
    return out


def original_freq_idx_search(non, asd, mlm_num, top=30):
    """mapping_func.freq_idx_search for its two classes (non = class 0, asd = class 1), ties aside."""
    for table in (non, asd):
        for i in range(len(table)):
            if table[i][1] != 0:
                table[i][0] = table[i][0] / table[i][1]
    non_order = np.argsort(-non[:, 0], kind="stable")[:top]  # (ties: lower id first, our documented rule)
    asd_order = np.argsort(-asd[:, 0], kind="stable")[:top]
    non_sorted, asd_sorted = non[non_order], asd[asd_order]
    non_mlm, asd_mlm = [], []
    for i in range(top):
        if non_order[i] == asd_order[i]:
            if non_sorted[i, 0] > asd_sorted[i, 0]:
                non_mlm.append(non_order[i])
        elif non_order[i] in asd_order:
            if i < np.where(asd_order == non_order[i])[0][0]:
                non_mlm.append(non_order[i])
        else:
            non_mlm.append(non_order[i])
    for i in range(top):
        if asd_order[i] == non_order[i]:
            if asd_sorted[i, 0] > non_sorted[i, 0]:
                asd_mlm.append(asd_order[i])
        elif asd_order[i] in non_order:
            if i < np.where(non_order == asd_order[i])[0][0]:
                asd_mlm.append(asd_order[i])
        else:
            asd_mlm.append(asd_order[i])
    return [non_mlm[:mlm_num], asd_mlm[:mlm_num]]


def original_statistics(probs, labels, num_source, top=30):
    """The pre-pass of adv_reprogramming.run: per class, sum of top-30 probabilities and counts per source."""
    tables = [np.zeros((num_source, 2)), np.zeros((num_source, 2))]
    for p, y in zip(probs, labels):
        idx = np.argsort(-p, kind="stable")[:top]
        for s in idx:
            tables[y][s][0] += p[s]
            tables[y][s][1] += 1
    return tables


def test_focal_loss_is_the_originals_mean_over_classes_and_batch():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(6, 2, generator=g, dtype=torch.float64)
    probs[0, 0] = 0.0  # clipped at 1e-7
    target = torch.tensor([0, 1, 1, 0, 1, 0])
    y = torch.nn.functional.one_hot(target, 2).tolist()
    expected = original_multi_focal_loss(4, 0.8, y, probs.tolist())
    assert float(bar_focal_loss(probs, target)) == pytest.approx(sum(expected) / len(expected), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_frequency_mapping_matches_the_originals_two_class_rule(seed):
    g = torch.Generator().manual_seed(seed)
    S = 60
    logits = 2 * torch.randn(40, S, generator=g, dtype=torch.float64)
    logits[:, :8] += 2.0  # shared favourites: both classes rank them, the rule must split them
    probs = logits.softmax(1)
    labels = torch.randint(0, 2, (40,), generator=g)
    non, asd = original_statistics(probs.numpy(), labels.numpy(), S)
    expected = original_freq_idx_search(non, asd, 6)
    index = bar_frequency_mapping(probs, labels, 2, k=6)
    assert index.tolist() == [[int(s) for s in row] for row in expected]
    assert not set(index[0].tolist()) & set(index[1].tolist())


def test_frequency_mapping_for_more_classes_keeps_each_source_once():
    g = torch.Generator().manual_seed(5)
    probs = torch.randn(90, 100, generator=g).softmax(1)
    labels = torch.arange(90) % 3
    index = bar_frequency_mapping(probs, labels, 3, k=6)
    assert index.shape == (3, 6) and index.unique().numel() == 18


def test_frequency_mapping_refuses_a_class_left_without_k_sources():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])  # same ranks, same averages: neither class keeps them
    with pytest.raises(ValueError, match="target class 0 keeps only 0"):
        bar_frequency_mapping(probs, torch.tensor([0, 1]), 2, k=2, top=3)
    with pytest.raises(ValueError, match="k must be a positive int"):
        bar_frequency_mapping(probs, torch.tensor([0, 1]), 2, k=0)
    with pytest.raises(ValueError, match="target values must lie"):
        bar_frequency_mapping(probs, torch.tensor([0, 2]), 2, k=1)
