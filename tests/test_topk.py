"""``harness.methods.mixing.topk``: the CPU-fast top-k the vLLM runner (and every engine) selects supports with."""

from __future__ import annotations

import pytest
import torch

from harness.methods.mixing import topk


@pytest.mark.parametrize("vocab", [512, 32768, 32768 + 77, 151936])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_topk_equals_torch_topk(vocab, k):
    generator = torch.Generator().manual_seed(vocab + k)
    logits = torch.randn(6, vocab, generator=generator) * 3
    logits[0, :100] = float("-inf")
    logits[1, -3] = 50.0  # a winner in the partial last chunk
    logits[2, :] = 0.0
    logits[2, 7] = 1.0
    values, ids = topk(logits, k)
    want_values, want_ids = torch.topk(logits, k)
    assert torch.equal(values, want_values)
    assert torch.equal(ids[[0, 1, 3, 4, 5]], want_ids[[0, 1, 3, 4, 5]])  # row 2 is all ties after the first
    assert torch.equal(logits.gather(1, ids), values)
    assert ids[1, 0] == vocab - 3 and ids[2, 0] == 7


def test_topk_in_bfloat16_keeps_the_values():
    logits = (torch.randn(4, 32768, generator=torch.Generator().manual_seed(0)) * 3).bfloat16()
    values, ids = topk(logits, 20)
    assert torch.equal(values, torch.topk(logits, 20).values)
    assert torch.equal(logits.gather(1, ids), values)
