"""Shards: part K of N of a list of clips, the same on every machine (``--shard K/N``).

A clip belongs to part ``1 + (first 8 bytes of sha1(clip name)) mod N``: the parts depend only on the names, not on
their order, on which machine runs them or on what else is in the list, so N processes -- on one machine or on N
Kaggle sessions -- each given ``--shard K/N`` with K = 1..N together cover every clip exactly once. Extraction
(``features.extract``) writes a shard's manifest rows to its own file, and scoring (``inference.shards``) writes a
part file per shard; both merge without recomputing anything.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .errors import ConfigError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def shard_of(name: str, count: int) -> int:
    """The part (1..count) that the clip called ``name`` belongs to."""
    digest = hashlib.sha1(str(name).encode("utf-8")).digest()
    return 1 + int.from_bytes(digest[:8], "big") % int(count)


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1..count) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"shard {self.index}/{self.count}: N (the number of parts) must be at least 1")
        if not 1 <= self.index <= self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: K must be between 1 and N "
                              f"(parts are numbered 1/{self.count} to {self.count}/{self.count})")

    @classmethod
    def parse(cls, spec: "str | Shard | None") -> "Shard | None":
        """``'K/N'`` -> Shard(K, N); None and '' -> None (no sharding). Raises ConfigError saying what is wrong."""
        if spec is None or isinstance(spec, Shard):
            return spec
        text = str(spec)
        if not text.strip():
            return None
        m = _SPEC.match(text)
        if not m:
            raise ConfigError(f"shard {text!r}: write K/N, part K of N parts (e.g. 1/4 ... 4/4)")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def label(self) -> str:
        """``'K/N'``."""
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """``'K-of-N'``: the shard in a file name."""
        return f"{self.index}-of-{self.count}"

    def holds(self, name: str) -> bool:
        """Does the clip called ``name`` belong to this part?"""
        return shard_of(name, self.count) == self.index

    def mask(self, names: Iterable[str]) -> np.ndarray:
        """bool per name: True for the names of this part."""
        return np.array([self.holds(str(n)) for n in names], dtype=bool)

    def __str__(self) -> str:
        return self.label
