"""NetAdapt proposals: every proposal meets the step, and takes the largest width that does."""

import dataclasses

import pytest

from latency.ops import net_ops
from latency.table import LatencyTable
from latency.timing import Protocol
from netadapt.latency_model import TableLatency
from netadapt.loop import NetAdaptConfig
from netadapt.proposals import apply, candidate_widths, propose, same_structure, units
from search_space import zoo
from netadapt_helpers import madds_ms, one_thread, tiny_spec  # noqa: F401  (one_thread: autouse fixture)


FAST = Protocol(runs=5, warmup=1, passes=1, quiet_wait=0, pin=False)


@pytest.fixture
def table_path(tmp_path):
    return tmp_path / "latency.parquet"


def check_proposals(spec, predict, current, delta, proposals, failed):
    limit = current - delta
    assert {p.unit.space for p in proposals}.isdisjoint({u.space for u in failed})
    assert len(proposals) + len(failed) == len(units(spec))
    for p in proposals:
        assert p.width % 8 == 0 and 8 <= p.width < p.unit.width
        assert p.latency_ms == pytest.approx(predict(p.spec))
        assert p.latency_ms <= limit, p.unit.label
        assert same_structure(spec, p.spec)
        # the largest such width: every valid larger width misses the step
        for w in candidate_widths(p.unit.width):
            if w <= p.width:
                break
            bigger = apply(spec, p.unit, w)
            if same_structure(spec, bigger):
                assert predict(bigger) > limit, (p.unit.label, w)
    for u in failed:  # not even the smallest valid width reaches the step
        for w in candidate_widths(u.width):
            smaller = apply(spec, u, w)
            if same_structure(spec, smaller):
                assert predict(smaller) > limit


@pytest.mark.parametrize("name", ["mnv3-large", "mnv3-small"])
def test_every_proposal_meets_the_step_and_is_the_largest_width(name):
    spec = zoo(name)
    lat = madds_ms(spec)
    for frac in (0.01, 0.05):
        proposals, failed = propose(spec, madds_ms, lat, frac * lat)
        assert proposals
        check_proposals(spec, madds_ms, lat, frac * lat, proposals, failed)
    # a large step: most units cannot make it, and they say so
    proposals, failed = propose(spec, madds_ms, lat, 0.2 * lat)
    assert failed
    check_proposals(spec, madds_ms, lat, 0.2 * lat, proposals, failed)


def test_proposals_with_a_real_table_measure_missing_ops(table_path):
    spec = tiny_spec()
    predict = TableLatency(table_path, protocol=FAST, log=lambda m: None)
    lat = predict(spec)
    before = len(LatencyTable.load(table_path))
    proposals, failed = propose(spec, predict, lat, 0.02 * lat)
    # Real timings of a tiny net: whether a unit can make the step depends on the machine,
    # but every unit either proposes a width that makes it or is reported as unable to.
    assert len(proposals) + len(failed) == len(units(spec))
    check_proposals(spec, predict, lat, 0.02 * lat, proposals, failed)
    table = LatencyTable.load(table_path)  # what was measured is on disk
    assert len(table) > before
    for p in proposals:
        assert all(op.key in table for op in net_ops(p.spec))
    # a fresh reader of the same table predicts the same
    again = TableLatency(table_path, measure_missing=False)
    assert [again(p.spec) for p in proposals] == [p.latency_ms for p in proposals]


def test_units_of_a_training_spec_match_the_latency_spec():
    spec = zoo("mnv3-small")
    train = dataclasses.replace(spec, resolution=32, in_channels=1, num_classes=10)
    assert [(u.space, u.rows) for u in units(spec)] == [(u.space, u.rows) for u in units(train)]
    proposals, _ = propose(spec, madds_ms, madds_ms(spec), 0.02 * madds_ms(spec), also=[train])
    for p in proposals:
        assert apply(train, p.unit, p.width).rows == p.spec.rows


def test_candidate_widths_are_multiples_of_8():
    assert candidate_widths(16) == [8]
    assert candidate_widths(8) == []
    assert candidate_widths(90)[:2] == [88, 80] and candidate_widths(90)[-1] == 8
    assert candidate_widths(960)[0] == 952


def test_step_schedules():
    mnv3 = NetAdaptConfig(target_ms=1.0)
    assert [mnv3.delta_ms(20.0, i) for i in (1, 2, 10)] == [pytest.approx(0.2)] * 3
    decay = NetAdaptConfig(target_ms=1.0, delta_schedule="decay")
    assert decay.delta_ms(100.0, 1) == pytest.approx(2.5)
    assert decay.delta_ms(100.0, 3) == pytest.approx(2.5 * 0.96 ** 2)
