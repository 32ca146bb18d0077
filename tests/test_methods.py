"""The decoding methods' math: limits, equivalences, agreement with the paper's and the reference
formulas, parameter checks, and the registry."""

from __future__ import annotations

import math

import pytest
import torch

from harness.methods import Rows, example_specs, get_method, make_spec, method_names, spec_from_fields
from harness.methods import mixing as moi
from harness.methods.batch import embed_feedback, numeric_params
from harness.methods.moi import moi_weights

V = 50


def rows_for(specs, n: int) -> Rows:
    """Rows of one group for the given specs (parameters per row), greedy sampling settings."""
    params = [numeric_params(s) for s in specs]
    column = {name: torch.tensor([p[name] for p in params], dtype=torch.float32) for name in params[0]}
    zeros = torch.zeros(n)
    host = {name: values.numpy() for name, values in column.items()} | {"top_k": zeros.numpy()}
    return Rows(column, {}, specs[0].params, zeros, torch.ones(n), torch.zeros(n, dtype=torch.long),
                torch.arange(n), torch.zeros(n, dtype=torch.long), host)


def dense_weights(specs, logits, sampled) -> torch.Tensor:
    """Each row's next-input weights [B, V] as its method computes them."""
    impl = specs[0].impl
    rows = rows_for(specs, len(specs))
    if not specs[0].mixed:
        return torch.nn.functional.one_hot(sampled, logits.shape[1]).float()
    fb = impl.feedback(impl.prepare(logits, rows), sampled, rows)
    return fb.weights if fb.ids is None else moi.dense(fb.ids, fb.weights, logits.shape[1])


def weights(logits, sampled, method, beta=1.0, support="topk", k=8, quirks=False):
    params = {"beta": beta, "support": support, "k": k, "reference_quirks": quirks} if method == "moi" else \
        ({"support": support, "k": k} if method == "direct_mixture" else {})
    return dense_weights([make_spec(method, **params)] * len(logits), logits, sampled)


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


def test_standard_is_one_hot_and_never_mixes():
    logits, _, _, sampled = random_case(0)
    assert not make_spec("standard").mixed
    assert torch.equal(weights(logits, sampled, "standard"), torch.nn.functional.one_hot(sampled, V).float())


def test_direct_mixture_is_the_distribution():
    logits, ids, probs, sampled = random_case(1)
    expected = torch.zeros(len(probs), V).scatter(1, ids, probs)
    torch.testing.assert_close(weights(logits, sampled, "direct_mixture"), expected)
    torch.testing.assert_close(weights(logits, sampled, "direct_mixture", support="full"), moi.full_distribution(logits))


def test_moi_tends_to_one_hot_as_beta_grows():
    logits, _, _, sampled = random_case(2)
    onehot = torch.nn.functional.one_hot(sampled, V).float()
    distances = [float((weights(logits, sampled, "moi", b) - onehot).abs().sum()) for b in (0.5, 2, 8, 1e3, 1e6)]
    assert all(a > b for a, b in zip(distances, distances[1:]))
    assert distances[-1] < 1e-5


def test_moi_with_zero_entropy_is_one_hot():
    probs = torch.zeros(2, 5)
    probs[:, 0] = 1.0
    ids = torch.tensor([[7, 1, 2, 3, 4], [9, 1, 2, 3, 4]])
    sampled = torch.tensor([7, 9])
    w_support, w_obs = moi_weights(ids, probs, moi.normalized_entropy(probs), sampled, torch.tensor([0.5, 0.5]))
    dense = moi.dense(torch.cat([ids, sampled[:, None]], 1), torch.cat([w_support, w_obs[:, None]], 1), V)
    assert torch.equal(dense, torch.nn.functional.one_hot(sampled, V).float())


def test_moi_beta_zero_on_uniform_is_the_distribution():
    logits = torch.zeros(3, V)
    sampled = torch.tensor([0, 17, 49])
    torch.testing.assert_close(weights(logits, sampled, "moi", 0.0, support="full"), torch.full((3, V), 1.0 / V))
    # the same with a top-k support: uniform over the k ids
    ids = torch.arange(10).repeat(3, 1)
    uniform = torch.full((3, 10), 0.1)
    w_support, w_obs = moi_weights(ids, uniform, moi.normalized_entropy(uniform), torch.tensor([1, 2, 3]), torch.zeros(3))
    torch.testing.assert_close(w_support, uniform)
    torch.testing.assert_close(w_obs, torch.zeros(3))


@pytest.mark.parametrize("method", ["standard", "direct_mixture", "moi"])
@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0, 8.0])
def test_weights_are_non_negative_and_sum_to_one(method, beta):
    for seed in range(5):
        logits, _, _, sampled = random_case(seed)
        for support in ("topk", "full"):
            w = weights(logits, sampled, method, beta, support=support)
            assert (w >= 0).all()
            torch.testing.assert_close(w.sum(-1), torch.ones(len(w)), atol=1e-6, rtol=0)


def test_moi_matches_paper_eq5_in_float64():
    for seed in range(20):
        logits, ids, probs, sampled = random_case(seed, k=12)
        beta = [0.0, 0.25, 0.5, 1.0, 2.0, 8.0][seed % 6]
        got_topk = weights(logits, sampled, "moi", beta, k=12)
        got_full = weights(logits, sampled, "moi", beta, support="full")
        full = moi.full_distribution(logits)
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
    got = weights(logits, sampled, "moi", beta, quirks=True)
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
    torch.testing.assert_close(weights(logits, sampled, "moi", beta).sum(-1), torch.ones(len(probs)))


def test_per_row_betas_match_row_by_row():
    logits, _, _, sampled = random_case(4)
    specs = [make_spec("moi", beta=b, k=8) for b in (1.0, 0.25, 3.0, 2.0, 8.0, 0.5)]
    batch = dense_weights(specs, logits, sampled)
    for row in range(len(specs)):
        single = dense_weights(specs[row : row + 1], logits[row : row + 1], sampled[row : row + 1])
        torch.testing.assert_close(batch[row : row + 1], single)


def test_mixed_embedding_equals_dense_weights_times_matrix():
    logits, _, _, sampled = random_case(5)
    embedding = torch.nn.Embedding(V, 16)
    for spec in (make_spec("moi", beta=0.5, k=8), make_spec("direct_mixture", k=8), make_spec("moi", beta=0.5, support="full")):
        specs = [spec] * len(logits)
        rows = rows_for(specs, len(specs))
        fb = spec.impl.feedback(spec.impl.prepare(logits, rows), sampled, rows)
        mixed = embed_feedback(fb, embedding, lambda w: moi.mix_dense(w, embedding.weight))
        torch.testing.assert_close(mixed, dense_weights(specs, logits, sampled) @ embedding.weight, atol=1e-5, rtol=1e-5)


def test_topk_support_is_the_renormalised_raw_distribution():
    logits = torch.tensor([[3.0, 1.0, 2.0, -1.0, 0.0]])
    ids, probs = moi.topk_distribution(logits, 3)
    assert ids.tolist() == [[0, 2, 1]]
    raw = torch.softmax(logits, -1)[0, [0, 2, 1]]
    torch.testing.assert_close(probs[0], raw / raw.sum())


def test_parameter_checks_name_the_bad_value_and_the_valid_ones():
    for method, params, fragment in [
        ("mixture", {}, "unknown method 'mixture'; valid methods: standard, direct_mixture, moi, soft_thinking"),
        ("moi", {"beta": -1.0}, "beta must be a finite number >= 0, got -1.0"),
        ("moi", {"beta": float("nan")}, "beta must be a finite number >= 0"),
        ("moi", {"beta": True}, "beta must be a finite number >= 0, got True"),
        ("moi", {"support": "all"}, "support must be one of topk, full, got 'all'"),
        ("moi", {"k": 0}, "k must be an integer >= 1, got 0"),
        ("moi", {"support": "full", "reference_quirks": True}, "reference_quirks=true needs support=topk"),
        ("standard", {"beta": 1.0}, "method standard has no parameter 'beta'"),
        ("soft_thinking", {"max_topk": 2.5}, "max_topk must be an integer >= 1, got 2.5"),
        ("soft_thinking", {"min_p": 2}, "min_p must be a finite number in [0, 1], got 2"),
        ("soft_thinking", {"gumbel_temperature": 0}, "gumbel_temperature must be a finite number > 0 or null, got 0"),
    ]:
        with pytest.raises(ValueError) as err:
            make_spec(method, **params)
        assert fragment in str(err.value)


def test_request_fields_round_trip_and_defaults():
    spec = make_spec("moi", beta=0.25, k=12)
    assert spec_from_fields(spec.to_fields()) == spec
    default = make_spec("moi", beta=2.0)
    assert spec_from_fields({}, default) == default
    assert spec_from_fields({"moi_beta": "0.5"}, default) == make_spec("moi", beta=0.5)
    assert spec_from_fields({"moi_method": "standard", "moi_beta": 3}, default) == make_spec()  # another method's field
    soft = make_spec("soft_thinking", max_topk=5)
    assert spec_from_fields(soft.to_fields()) == soft
    for bad, fragment in [
        ({"moi_beta": "abc"}, "moi_beta must be a finite number >= 0, got 'abc'"),
        ({"moi_method": 3}, "moi_method must be one of"),
        ({"moi_method": "moi", "moi_k": 2.5}, "moi_k must be an integer"),
        ({"moi_betta": 1}, "unknown field(s) moi_betta; valid fields for method standard: moi_method"),
        ({"moi_method": "moi", "moi_reference_quirks": "maybe"}, "moi_reference_quirks must be true or false"),
    ]:
        with pytest.raises(ValueError) as err:
            spec_from_fields(bad)
        assert fragment in str(err.value)


def test_identity_holds_only_what_determines_samples():
    assert make_spec().identity() == {"name": "standard"}
    assert make_spec("direct_mixture", support="full", k=5).identity() == {"name": "direct_mixture", "support": "full"}
    assert make_spec("moi", beta=2).identity() == {"name": "moi", "beta": 2.0, "support": "topk", "k": 20, "reference_quirks": False}
    soft = make_spec("soft_thinking", think_end_id=7).identity()
    assert "think_end_id" not in soft and soft["max_topk"] == 10
    assert make_spec("moi", beta=2).tag() == "moi-b2" and make_spec("soft_thinking").tag() == "soft_thinking"


def test_every_registered_method_is_well_formed():
    for name in method_names():
        impl = get_method(name)
        assert impl.name == name and impl.label
        assert len({p.name for p in impl.params}) == len(impl.params)
        for example in impl.examples:
            make_spec(name, **example)
        for histogram in impl.histograms.values():
            low, high, bins = histogram
            assert high > low and bins > 0
    assert {s.method for s in example_specs()} == set(method_names())
