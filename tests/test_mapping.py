"""reprogram_ext.mapping against the formulas of docs/mapping.md, written out as plain Python loops."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprogram_ext.mapping import bayesian_mapping, count_matrix, frequency_mapping, identity_mapping, random_mapping


def greedy_by_hand(D, k):
    """ILM-VP greedy as stated: scan the remaining entries in row-major order for the first maximum."""
    S, T = len(D), len(D[0])
    rows, cols_alive, chosen = set(range(S)), set(range(T)), {t: [] for t in range(T)}
    for _ in range(k * T):
        best = None
        for s in range(S):
            for t in range(T):
                if s in rows and t in cols_alive and (best is None or D[s][t] > best[0]):
                    best = (D[s][t], s, t)
        _, s, t = best
        chosen[t].append(s)
        rows.discard(s)
        if len(chosen[t]) == k:
            cols_alive.discard(t)
    return [chosen[t] for t in range(T)]


def counts_by_hand(logits, target, T, topk=None):
    S = logits.shape[-1]
    D = [[0.0] * T for _ in range(S)]
    for row, t in zip(logits.reshape(-1, S).tolist(), target.reshape(-1).tolist()):
        if topk is None:
            s = max(range(S), key=lambda i: (row[i], -i))  # largest value, lowest index on ties
            D[s][t] += 1
        else:
            probs = torch.softmax(torch.tensor(row), 0).tolist()
            for s in sorted(range(S), key=lambda i: (-probs[i], i))[:topk]:
                D[s][t] += probs[s]
    return torch.tensor(D)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_frequency_mapping_is_the_greedy_rule(data):
    S = data.draw(st.integers(1, 9))
    T = data.draw(st.integers(1, S))
    k = data.draw(st.integers(1, S // T))
    D = data.draw(st.lists(st.lists(st.integers(0, 2), min_size=T, max_size=T), min_size=S, max_size=S))
    index = frequency_mapping(torch.tensor(D, dtype=torch.float32), k)
    assert index.dtype == torch.int64 and index.shape == (T, k)
    assert index.tolist() == greedy_by_hand(D, k)


def test_frequency_mapping_tie_rule_by_example():
    # all equal: (0,0) first, then (1,1), ... ; then a tie between (0,1) and (1,0): row-major picks (0,1)
    assert frequency_mapping(torch.zeros(4, 3)).tolist() == [[0], [1], [2]]
    D = torch.tensor([[0., 5., 1.], [5., 0., 1.], [1., 1., 1.]])
    assert frequency_mapping(D).tolist() == [[1], [0], [2]]
    # k = 2: column 0 takes 9 then 8 and closes; column 1 then gets the ties (2, 1) and (3, 1) in row order
    D = torch.tensor([[9., 1.], [8., 7.], [6., 0.], [0., 0.]])
    assert frequency_mapping(D, k=2).tolist() == [[0, 1], [2, 3]]


def test_frequency_mapping_accepts_integer_counts_and_rejects_bad_input():
    assert frequency_mapping(torch.tensor([[1, 3], [2, 0]])).tolist() == [[1], [0]]
    with pytest.raises(ValueError, match="k\\*T <= S"):
        frequency_mapping(torch.zeros(5, 3), k=2)
    with pytest.raises(ValueError, match="counts must have shape"):
        frequency_mapping(torch.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        frequency_mapping(torch.tensor([[float("nan")], [1.0]]))
    with pytest.raises(TypeError, match="k must be an int"):
        frequency_mapping(torch.zeros(3, 3), k=1.5)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_count_matrix_argmax_counts_with_ties(data):
    S, T, N = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4)), data.draw(st.integers(0, 12))
    logits = torch.tensor(data.draw(st.lists(st.lists(st.integers(-1, 1), min_size=S, max_size=S),
                                             min_size=N, max_size=N)), dtype=torch.float32).reshape(N, S)
    target = torch.tensor(data.draw(st.lists(st.integers(0, T - 1), min_size=N, max_size=N)), dtype=torch.int64)
    D = count_matrix(logits, target, T)
    assert D.dtype == torch.float32 and D.shape == (S, T)
    assert torch.equal(D, counts_by_hand(logits, target, T))


@pytest.mark.parametrize("topk", [1, 2, 4])
def test_count_matrix_topk_adds_probabilities(topk):
    logits = torch.randn(20, 6)
    logits[3] = 0.0  # a row of ties: sources 0..topk-1 get 1/6 each
    target = torch.randint(0, 3, (20,))
    D = count_matrix(logits, target, 3, topk=topk)
    torch.testing.assert_close(D, counts_by_hand(logits, target, 3, topk))
    torch.testing.assert_close(D.sum(), torch.softmax(logits, 1).topk(topk, 1).values.sum())


def test_count_matrix_accumulates_in_place_over_leading_dims():
    logits, target = torch.randn(2, 5, 7), torch.randint(0, 4, (2, 5))
    counts = torch.zeros(7, 4, dtype=torch.float64)
    out = count_matrix(logits[0], target[0], 4, counts=counts)
    assert out is counts
    count_matrix(logits[1], target[1], 4, counts=counts)
    assert counts.dtype == torch.float64
    torch.testing.assert_close(counts, count_matrix(logits, target, 4).double())
    assert counts.sum() == 10


def test_count_matrix_leaves_inputs_alone_and_ignores_grad():
    logits = torch.randn(8, 5, requires_grad=True)
    target = torch.randint(0, 2, (8,))
    before = logits.detach().clone()
    D = count_matrix(logits, target, 2, topk=2)
    assert not D.requires_grad and torch.equal(logits.detach(), before)


def test_count_matrix_errors():
    with pytest.raises(ValueError, match="target must have shape"):
        count_matrix(torch.randn(4, 3), torch.zeros(5, dtype=torch.int64), 2)
    with pytest.raises(TypeError, match="target must be an integer"):
        count_matrix(torch.randn(4, 3), torch.zeros(4), 2)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 2\)"):
        count_matrix(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), 2)
    with pytest.raises(ValueError, match="topk must be <= S=3"):
        count_matrix(torch.randn(4, 3), torch.zeros(4, dtype=torch.int64), 2, topk=4)
    with pytest.raises(ValueError, match=r"counts must have shape \(S, T\) = \(3, 2\)"):
        count_matrix(torch.randn(4, 3), torch.zeros(4, dtype=torch.int64), 2, counts=torch.zeros(2, 3))
    with pytest.raises(TypeError, match="logits must be a floating"):
        count_matrix(torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64), 2)


@pytest.mark.parametrize("laplace", [0.0, 1.0, 2.5])
def test_bayesian_mapping_formula(laplace):
    D = torch.randint(0, 5, (6, 4)).float()
    D[2] = 0  # a source never predicted
    D[:, 3] = 0  # a target with no counts: its column is all zero
    P = [[D[s, t].item() / (D[s].sum().item() + laplace) if D[s].sum().item() + laplace > 0 else 0.0
          for t in range(4)] for s in range(6)]
    col = [sum(P[s][t] for s in range(6)) for t in range(4)]
    omega = [[P[s][t] / col[t] if col[t] > 0 else 0.0 for t in range(4)] for s in range(6)]
    out = bayesian_mapping(D, laplace)
    torch.testing.assert_close(out, torch.tensor(omega))
    assert torch.all(out[:, 3] == 0) and torch.all(out[2] == 0)
    torch.testing.assert_close(out[:, :3].sum(0), torch.ones(3))


def test_bayesian_mapping_errors_and_dtype():
    assert bayesian_mapping(torch.ones(3, 2, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match="laplace must be >= 0"):
        bayesian_mapping(torch.ones(3, 2), laplace=-1.0)


def test_random_mapping_distinct_reproducible():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = random_mapping(20, 4, 3, g1), random_mapping(20, 4, 3, g2)
    assert torch.equal(a, b) and a.shape == (4, 3) and a.dtype == torch.int64
    assert len(set(a.flatten().tolist())) == 12 and 0 <= a.min() and a.max() < 20
    with pytest.raises(ValueError, match="k\\*T <= S"):
        random_mapping(5, 3, 2)


def test_identity_mapping():
    assert identity_mapping(3, 2).tolist() == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="num_target must be >= 1"):
        identity_mapping(0)
