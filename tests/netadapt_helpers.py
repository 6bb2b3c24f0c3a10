"""Shared pieces of the NetAdapt tests."""

import pytest
import torch

from search_space import ArchSpec, Row, count_madds


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one torch thread is faster, and much faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def madds_ms(spec):
    """An analytic stand-in for latency (1 ms per 10M MAdds), for nets too big to time here."""
    return count_madds(spec) / 1e7


def tiny_spec(resolution=32):
    return ArchSpec("tiny", rows=(
        Row("conv", 16, kernel=3, nl="hswish", stride=2),
        Row("bneck", 16, kernel=3, exp=16, se=0.25, nl="relu"),
        Row("bneck", 24, kernel=3, exp=64, nl="relu", stride=2),
        Row("bneck", 24, kernel=3, exp=72, se=0.25, nl="relu"),
        Row("bneck", 40, kernel=5, exp=96, se=0.25, nl="hswish", stride=2),
        Row("conv", 96, kernel=1, nl="hswish"), Row("pool"), Row("fc", 128, nl="hswish", bn=False)),
        resolution=resolution)
