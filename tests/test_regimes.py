"""Data regimes (Vu et al. 2020, §2.2): FULL, LIMITED = 1,000 seeded examples, three transfer regimes."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from tasktransfer_utils.data.regimes import (FULL_TO_FULL, FULL_TO_LIMITED, LIMITED_SIZE, LIMITED_TO_LIMITED,
                                             TRANSFER_REGIMES, Regime, TransferRegime, apply_regime, data_regime,
                                             get_transfer_regime, limited_indices)


@pytest.fixture(scope="module")
def train():
    return Dataset.from_dict({"x": list(range(5000))})


def test_full_is_the_whole_set(train):
    assert apply_regime(train, Regime.FULL, seed=3) is train
    assert apply_regime(train, "FULL", seed=3) is train


def test_limited_is_a_seeded_sample_without_replacement(train):
    a = apply_regime(train, Regime.LIMITED, seed=0)
    b = apply_regime(train, Regime.LIMITED, seed=0)
    c = apply_regime(train, Regime.LIMITED, seed=1)
    assert LIMITED_SIZE == 1000 and len(a) == 1000
    assert a["x"] == b["x"]
    assert a["x"] != c["x"]
    assert len(set(a["x"])) == 1000 and set(a["x"]) <= set(range(5000))
    # the same draw computed another way: numpy's generator directly
    expected = sorted(np.random.default_rng(0).choice(5000, size=1000, replace=False).tolist())
    assert a["x"] == expected


def test_limited_of_a_small_set_keeps_every_row():
    small = Dataset.from_dict({"x": list(range(10))})
    assert sorted(apply_regime(small, Regime.LIMITED, seed=5)["x"]) == list(range(10))
    assert len(apply_regime(small, Regime.LIMITED, seed=5, n=4)) == 4
    with pytest.raises(ValueError):
        limited_indices(10, seed=0, n=0)


def test_samples_of_different_seeds_overlap_as_chance_predicts(train):
    # expected overlap of two independent 1000-of-5000 samples is 1000 * 1000 / 5000 = 200
    overlaps = [len(set(limited_indices(5000, s)) & set(limited_indices(5000, s + 100))) for s in range(20)]
    assert 170 < np.mean(overlaps) < 230


def test_transfer_regimes_are_named_objects():
    assert [r.name for r in TRANSFER_REGIMES] == ["FULL→FULL", "FULL→LIMITED", "LIMITED→LIMITED"]
    assert FULL_TO_LIMITED == TransferRegime(Regime.FULL, Regime.LIMITED)
    assert FULL_TO_FULL.source is Regime.FULL and LIMITED_TO_LIMITED.target is Regime.LIMITED
    assert get_transfer_regime("full->limited") is FULL_TO_LIMITED
    assert get_transfer_regime("LIMITED_TO_LIMITED") is LIMITED_TO_LIMITED
    assert str(FULL_TO_FULL) == "FULL→FULL"
    with pytest.raises(ValueError, match="FULL→FULL"):
        get_transfer_regime("LIMITED→FULL")


@pytest.mark.parametrize("spelling", ["FULL→LIMITED", "FULL->LIMITED", "full->limited", "FULL_TO_LIMITED",
                                      "full_to_limited", "FULL → LIMITED", "Full -> Limited"])
def test_data_regime_reads_every_spelling_of_a_transfer_regime(spelling):
    assert get_transfer_regime(spelling) is FULL_TO_LIMITED
    assert data_regime(spelling, "source") is Regime.FULL and data_regime(spelling) is Regime.FULL
    assert data_regime(spelling, "target") is Regime.LIMITED


def test_data_regime_of_data_regimes_and_objects():
    for value in ("LIMITED", "limited", " Limited ", Regime.LIMITED, LIMITED_TO_LIMITED):
        assert data_regime(value) is Regime.LIMITED and data_regime(value, "target") is Regime.LIMITED
    assert data_regime(FULL_TO_LIMITED, "target") is Regime.LIMITED and data_regime("FULL") is Regime.FULL
    with pytest.raises(ValueError, match="Unknown regime 'LIMITED→FULL'; expected FULL, LIMITED or"):
        data_regime("LIMITED→FULL")
    with pytest.raises(ValueError, match="side"):
        data_regime("FULL", "middle")
