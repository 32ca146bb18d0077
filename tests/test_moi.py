"""The MoI math: limits, equivalences, and agreement with the paper's and the reference formulas."""

from __future__ import annotations

import math

import pytest
import torch

from harness.methods import mixing as moi
from harness.methods.mixing import DIRECT_MIXTURE, MOI, STANDARD, MixSpec

V = 50


def weights(probs, sampled, method, beta, ids=None, quirks=False, vocab=V):
    """Dense weights [B, V] for one method/beta over all rows."""
    batch = probs.shape[0]
    methods = torch.full((batch,), method)
    betas = torch.full((batch,), float(beta))
    w_support, w_obs = moi.mixing_weights(ids, probs, sampled, methods, betas, quirks)
    return moi.dense_weights(ids, w_support, sampled, w_obs, vocab)


def random_case(seed: int, batch: int = 6, k: int = 8):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, V, generator=gen) * 3
    ids, probs = moi.topk_distribution(logits, k)
    sampled = torch.randint(0, V, (batch,), generator=gen)
    sampled[::2] = ids[::2, 3]  # half inside the top k, half (probably) outside
    return logits, ids, probs, sampled


def paper_eq5(p: torch.Tensor, y: int, beta: float, support_size: int) -> torch.Tensor:
    """Eq. 5 transcribed in float64: (H p + (beta + 1 - H) e_y) / (beta + 1)."""
    p = p.double()
    nz = p[p > 0]
    entropy = float(-(nz * nz.log()).sum() / math.log(support_size))
    onehot = torch.zeros_like(p)
    onehot[y] = 1.0
    return (entropy * p + (beta + 1 - entropy) * onehot) / (beta + 1)


def test_standard_is_one_hot():
    _, ids, probs, sampled = random_case(0)
    w = weights(probs, sampled, STANDARD, 1.0, ids)
    assert torch.equal(w, torch.nn.functional.one_hot(sampled, V).float())


def test_direct_mixture_is_the_distribution():
    logits, ids, probs, sampled = random_case(1)
    w = weights(probs, sampled, DIRECT_MIXTURE, 1.0, ids)
    expected = torch.zeros(len(probs), V).scatter(1, ids, probs)
    torch.testing.assert_close(w, expected)
    full = moi.full_distribution(logits)
    torch.testing.assert_close(weights(full, sampled, DIRECT_MIXTURE, 1.0), full)


def test_moi_tends_to_one_hot_as_beta_grows():
    _, ids, probs, sampled = random_case(2)
    onehot = torch.nn.functional.one_hot(sampled, V).float()
    distances = [float((weights(probs, sampled, MOI, b, ids) - onehot).abs().sum()) for b in (0.5, 2, 8, 1e3, 1e6)]
    assert all(a > b for a, b in zip(distances, distances[1:]))
    assert distances[-1] < 1e-5


def test_moi_with_zero_entropy_is_one_hot():
    probs = torch.zeros(2, 5)
    probs[:, 0] = 1.0
    ids = torch.tensor([[7, 1, 2, 3, 4], [9, 1, 2, 3, 4]])
    sampled = torch.tensor([7, 9])
    w = weights(probs, sampled, MOI, 0.5, ids)
    assert torch.equal(w, torch.nn.functional.one_hot(sampled, V).float())


def test_moi_beta_zero_on_uniform_is_the_distribution():
    probs = torch.full((3, V), 1.0 / V)
    sampled = torch.tensor([0, 17, 49])
    torch.testing.assert_close(weights(probs, sampled, MOI, 0.0), probs)
    # the same with a top-k support: uniform over the k ids
    ids = torch.arange(10).repeat(3, 1)
    uniform_k = torch.full((3, 10), 0.1)
    expected = torch.zeros(3, V)
    expected[:, :10] = 0.1
    torch.testing.assert_close(weights(uniform_k, torch.tensor([1, 2, 3]), MOI, 0.0, ids), expected)


@pytest.mark.parametrize("method", [STANDARD, DIRECT_MIXTURE, MOI])
@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0, 8.0])
def test_weights_are_non_negative_and_sum_to_one(method, beta):
    for seed in range(5):
        logits, ids, probs, sampled = random_case(seed)
        for w in (weights(probs, sampled, method, beta, ids), weights(moi.full_distribution(logits), sampled, method, beta)):
            assert (w >= 0).all()
            torch.testing.assert_close(w.sum(-1), torch.ones(len(w)), atol=1e-6, rtol=0)


def test_moi_matches_paper_eq5_in_float64():
    for seed in range(20):
        logits, ids, probs, sampled = random_case(seed, k=12)
        beta = [0.0, 0.25, 0.5, 1.0, 2.0, 8.0][seed % 6]
        got_topk = weights(probs, sampled, MOI, beta, ids)
        full = moi.full_distribution(logits)
        got_full = weights(full, sampled, MOI, beta)
        for row in range(len(probs)):
            p_topk = torch.zeros(V, dtype=torch.float64).scatter(0, ids[row], probs[row].double())
            # entropy over the support only: the support size is k
            expected = paper_eq5(p_topk, int(sampled[row]), beta, support_size=12)
            torch.testing.assert_close(got_topk[row].double(), expected, atol=2e-7, rtol=0)
            expected_full = paper_eq5(full[row], int(sampled[row]), beta, support_size=V)
            torch.testing.assert_close(got_full[row].double(), expected_full, atol=2e-7, rtol=0)


def test_reference_quirks_formula():
    """quirks: H (p + beta onehot_in_topk) / (1 + beta) + (1 - H) onehot, which loses mass outside the top k."""
    logits, ids, probs, sampled = random_case(3)
    beta = 0.5
    got = weights(probs, sampled, MOI, beta, ids, quirks=True)
    entropy = moi.normalized_entropy(probs)
    for row in range(len(probs)):
        p = torch.zeros(V).scatter(0, ids[row], probs[row])
        in_topk = torch.zeros(V).scatter(0, ids[row], (ids[row] == sampled[row]).float())
        onehot = torch.nn.functional.one_hot(sampled[row], V).float()
        h = entropy[row]
        expected = h * (p + beta * in_topk) / (1 + beta) + (1 - h) * onehot
        torch.testing.assert_close(got[row], expected)
    inside = (ids == sampled[:, None]).any(1)
    assert inside.any() and (~inside).any()
    sums = got.sum(-1)
    torch.testing.assert_close(sums[inside], torch.ones(int(inside.sum())))
    assert (sums[~inside] < 1 - 1e-3).all()  # the reference bug
    # without quirks the same rows sum to 1
    fixed = weights(probs, sampled, MOI, beta, ids)
    torch.testing.assert_close(fixed.sum(-1), torch.ones(len(fixed)))


def test_per_row_methods_and_betas_match_row_by_row():
    _, ids, probs, sampled = random_case(4)
    methods = torch.tensor([STANDARD, MOI, DIRECT_MIXTURE, MOI, MOI, STANDARD])
    betas = torch.tensor([1.0, 0.25, 3.0, 2.0, 8.0, 0.5])
    w_support, w_obs = moi.mixing_weights(ids, probs, sampled, methods, betas)
    batch = moi.dense_weights(ids, w_support, sampled, w_obs, V)
    for row in range(len(probs)):
        single = weights(probs[row : row + 1], sampled[row : row + 1], int(methods[row]), float(betas[row]), ids[row : row + 1])
        torch.testing.assert_close(batch[row : row + 1], single)


def test_mixed_embedding_equals_dense_weights_times_matrix():
    logits, ids, probs, sampled = random_case(5)
    embedding = torch.nn.Embedding(V, 16)
    specs = [MixSpec("moi", 0.5, k=8), MixSpec("direct_mixture", k=8), MixSpec("moi", 4.0, k=8)] * 2
    mixed = moi.mixed_inputs(moi.SupportRows(ids, probs), sampled, specs, embedding)
    methods = torch.tensor([s.code for s in specs])
    betas = torch.tensor([s.beta for s in specs])
    w_support, w_obs = moi.mixing_weights(ids, probs, sampled, methods, betas)
    dense = moi.dense_weights(ids, w_support, sampled, w_obs, V)
    torch.testing.assert_close(mixed, dense @ embedding.weight, atol=1e-5, rtol=1e-5)
    full_specs = [MixSpec("moi", 0.5, support="full")] * len(specs)
    full = moi.support_of(logits, full_specs[0])
    via_matrix = moi.mixed_inputs(full, sampled, full_specs, embedding, embedding.weight)
    dense_full = weights(full.probs, sampled, MOI, 0.5)
    torch.testing.assert_close(via_matrix, dense_full @ embedding.weight, atol=1e-5, rtol=1e-5)


def test_topk_support_is_the_renormalised_raw_distribution():
    logits = torch.tensor([[3.0, 1.0, 2.0, -1.0, 0.0]])
    ids, probs = moi.topk_distribution(logits, 3)
    assert ids.tolist() == [[0, 2, 1]]
    raw = torch.softmax(logits, -1)[0, [0, 2, 1]]
    torch.testing.assert_close(probs[0], raw / raw.sum())


def test_mixspec_validation_names_the_bad_value():
    for kwargs, fragment in [
        ({"method": "mixture"}, "unknown method 'mixture'; valid methods: standard, direct_mixture, moi"),
        ({"method": "moi", "beta": -1.0}, "beta must be a finite number >= 0, got -1.0"),
        ({"method": "moi", "beta": float("nan")}, "beta must be a finite number >= 0"),
        ({"support": "all"}, "unknown support 'all'; valid supports: topk, full"),
        ({"k": 0}, "k (the top-k support size) must be an integer >= 1, got 0"),
        ({"support": "full", "reference_quirks": True}, "reference_quirks=true needs support=topk"),
    ]:
        with pytest.raises(ValueError) as err:
            MixSpec(**kwargs)
        assert fragment in str(err.value)


def test_extra_args_round_trip_and_defaults():
    spec = MixSpec("moi", 0.25, "topk", 12, False)
    assert MixSpec.from_extra_args(spec.to_extra_args()) == spec
    default = MixSpec("moi", 2.0)
    assert MixSpec.from_extra_args({}, default) == default
    assert MixSpec.from_extra_args({"moi_beta": "0.5"}, default) == MixSpec("moi", 0.5)
    assert MixSpec.from_extra_args({"moi_method": "standard"}, default).method == "standard"
    for bad, fragment in [
        ({"moi_beta": "abc"}, "moi_beta must be a number"),
        ({"moi_method": 3}, "moi_method must be one of"),
        ({"moi_k": 2.5}, "moi_k must be an integer"),
        ({"moi_betta": 1}, "unknown MoI field(s) moi_betta"),
        ({"moi_reference_quirks": "maybe"}, "moi_reference_quirks must be true or false"),
    ]:
        with pytest.raises(ValueError) as err:
            MixSpec.from_extra_args(bad)
        assert fragment in str(err.value)
