"""Reproducible noise for decoding methods: a pure function of (seed, step, column, stream).

A method that samples or perturbs on its own (Soft Thinking's Dirichlet and Gumbel variants, its
discrete decoding after thinking) draws its randomness from here instead of a generator, so that
every engine, batch order, preemption and device gives the same values for the same sample:
``uniform(seed, step, n)`` hashes the integers with a vectorised 32-bit mixer (all products stay
below 2**63, so int64 arithmetic is exact on every backend). Vectorised over rows; no state.
"""

from __future__ import annotations

import math

import torch

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # added between the inputs so that (a, b) and (b, a) differ


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche mixer on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK
    return x ^ (x >> 16)


def uniform(seed: torch.Tensor, step: torch.Tensor, width: int, stream: int = 0) -> torch.Tensor:
    """``[n, width]`` float32 values in (0, 1), a pure function of each row's (seed, step), the
    column and ``stream`` (different uses of one step draw from different streams)."""
    device = seed.device
    columns = torch.arange(width, device=device, dtype=torch.int64)
    x = _mix((seed.long() & _MASK) + _GOLDEN * (stream + 1))
    x = _mix((x + (step.long() & _MASK) + _GOLDEN) & _MASK)
    x = _mix((x[:, None] + columns[None, :] * _GOLDEN) & _MASK)
    return ((x >> 8).to(torch.float32) + 0.5) / float(1 << 24)


def gumbel(seed: torch.Tensor, step: torch.Tensor, width: int, stream: int = 0) -> torch.Tensor:
    """Standard Gumbel noise ``[n, width]``: ``-log(-log U)``."""
    return -torch.log(-torch.log(uniform(seed, step, width, stream)))


def normal(seed: torch.Tensor, step: torch.Tensor, width: int, stream: int = 0) -> torch.Tensor:
    """Standard normal noise ``[n, width]`` (Box-Muller over two uniform streams)."""
    u1 = uniform(seed, step, width, 2 * stream + 1000)
    u2 = uniform(seed, step, width, 2 * stream + 1001)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


def gamma(concentration: torch.Tensor, seed: torch.Tensor, step: torch.Tensor, stream: int = 0, rounds: int = 8) -> torch.Tensor:
    """Gamma(concentration, 1) samples, one per entry of ``concentration [n, m]`` (0 where it is 0).

    Marsaglia and Tsang's method with a fixed number of vectorised proposal rounds (each accepts
    with probability above 0.95 for a >= 1; the mean is used in the vanishing case that all
    reject); concentrations below 1 use Gamma(a) = Gamma(a + 1) * U**(1/a).
    """
    a = concentration.float()
    width = a.shape[1]
    boosted = torch.where(a < 1, a + 1, a)
    d = boosted - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = d.clone()  # the mean of Gamma(a + 1) - 1/3 ~ a fallback close to the mode
    accepted = torch.zeros_like(a, dtype=torch.bool)
    for round_ in range(rounds):
        z = normal(seed, step, width, stream * 64 + 2 * round_)
        u = uniform(seed, step, width, stream * 64 + 2 * round_ + 1)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-30)))
        take = ok & ~accepted
        out = torch.where(take, d * v, out)
        accepted |= ok
    small = uniform(seed, step, width, stream * 64 + 63)
    out = torch.where(a < 1, out * small ** (1.0 / a.clamp_min(1e-30)), out)
    return torch.where(a > 0, out, torch.zeros_like(out))


def dirichlet(concentration: torch.Tensor, seed: torch.Tensor, step: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Dirichlet samples ``[n, m]`` (rows sum to 1; entries with concentration 0 stay 0)."""
    draws = gamma(concentration, seed, step, stream)
    return draws / draws.sum(dim=-1, keepdim=True).clamp_min(1e-30)
