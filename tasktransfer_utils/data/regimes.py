"""Data regimes (Vu et al. 2020, §2.2): FULL uses the whole training set, LIMITED a seeded random sample of
1,000 training examples; transfer regimes pair a source regime with a target regime."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from datasets import Dataset


class Regime(str, Enum):
    FULL = "FULL"
    LIMITED = "LIMITED"


LIMITED_SIZE = 1000


def limited_indices(num_rows: int, seed: int, n: int = LIMITED_SIZE) -> np.ndarray:
    """Row indices of the LIMITED sample: ``min(n, num_rows)`` rows drawn without replacement with
    ``numpy.random.default_rng(seed)``, returned in increasing order (shape (min(n, num_rows),))."""
    if n <= 0:
        raise ValueError(f"LIMITED sample size must be positive, got n={n}")
    if num_rows < 0:
        raise ValueError(f"num_rows must be >= 0, got {num_rows}")
    k = min(n, num_rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_rows, size=k, replace=False))


def apply_regime(train: Dataset, regime: Regime | str, seed: int, n: int = LIMITED_SIZE) -> Dataset:
    """FULL: ``train`` unchanged. LIMITED: a seeded sample of ``n`` rows without replacement (all rows when
    the set is smaller). Same seed -> same rows; different seeds -> different rows."""
    regime = Regime(regime)
    if regime is Regime.FULL:
        return train
    return train.select(limited_indices(len(train), seed, n).tolist())


@dataclass(frozen=True)
class TransferRegime:
    """Source-task regime and target-task regime of one transfer experiment."""

    source: Regime
    target: Regime

    @property
    def name(self) -> str:
        return f"{self.source.value}→{self.target.value}"

    def __str__(self) -> str:
        return self.name


FULL_TO_FULL = TransferRegime(Regime.FULL, Regime.FULL)
FULL_TO_LIMITED = TransferRegime(Regime.FULL, Regime.LIMITED)
LIMITED_TO_LIMITED = TransferRegime(Regime.LIMITED, Regime.LIMITED)
TRANSFER_REGIMES: tuple[TransferRegime, ...] = (FULL_TO_FULL, FULL_TO_LIMITED, LIMITED_TO_LIMITED)


def get_transfer_regime(name: str) -> TransferRegime:
    """Look a transfer regime up by name: 'FULL→LIMITED', also written 'FULL->LIMITED' or 'full_to_limited'."""
    key = name.upper().replace("->", "→").replace("_TO_", "→").replace(" ", "")
    for regime in TRANSFER_REGIMES:
        if regime.name == key:
            return regime
    raise ValueError(f"Unknown transfer regime {name!r}; expected one of "
                     + ", ".join(r.name for r in TRANSFER_REGIMES))


def data_regime(value: "Regime | TransferRegime | str", side: str = "source") -> Regime:
    """The data regime ``value`` stands for: a data regime (``Regime`` or its name in any case, 'LIMITED') is
    itself; a transfer regime (``TransferRegime`` or any spelling :func:`get_transfer_regime` accepts:
    'FULL→LIMITED', 'FULL->LIMITED', 'full_to_limited') gives its ``side``, "source" or "target"."""
    if side not in ("source", "target"):
        raise ValueError(f"side must be 'source' or 'target', got {side!r}")
    if isinstance(value, Regime):
        return value
    if isinstance(value, TransferRegime):
        return getattr(value, side)
    text = str(value).strip().upper()
    if text in Regime.__members__:
        return Regime(text)
    try:
        return getattr(get_transfer_regime(str(value)), side)
    except ValueError:
        raise ValueError(f"Unknown regime {value!r}; expected FULL, LIMITED or a transfer regime ("
                         + ", ".join(r.name for r in TRANSFER_REGIMES) + ")") from None
