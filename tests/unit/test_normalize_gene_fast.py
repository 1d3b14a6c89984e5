"""Plain gene symbols (ASCII letters and digits) take a short cut in ``normalize_gene``: it must give exactly what
the full rules give, for every name it takes."""

from __future__ import annotations

import random
import re
import string

import pytest

from ingest.normalize import NormalizedFeature, gene
from ingest.normalize.gene import normalize_gene


def _full_rules(raw: str, monkeypatch: pytest.MonkeyPatch) -> NormalizedFeature:
    with monkeypatch.context() as patch:
        patch.setattr(gene, "_PLAIN_SYMBOL", re.compile(r"(?!)"))  # matches nothing: no short cut
        return normalize_gene(raw)


def _names() -> list[str]:
    rng = random.Random(15)
    plain = string.ascii_letters + string.digits
    names = ["TP53", "tp53", "Trp53", "ENSG00000141510", "Ensg00000141510", "ens1", "SEPT1", "A1", "1", "12", "x"]
    for _ in range(20_000):
        names.append("".join(rng.choice(plain) for _ in range(rng.randrange(1, 12))))
        names.append("ENS" + rng.choice("GTPEgtpe") + "".join(rng.choice(string.digits) for _ in range(11)))
    return names


def test_the_short_cut_gives_what_the_full_rules_give(monkeypatch: pytest.MonkeyPatch) -> None:
    names = _names()
    taken = [n for n in names if gene._PLAIN_SYMBOL.fullmatch(n) and n[:3].upper() != "ENS"]
    assert len(taken) > 10_000  # the corpus exercises the short cut
    for name in names:
        fast, full = normalize_gene(name), _full_rules(name, monkeypatch)
        assert (fast, fast.external_ids) == (full, full.external_ids), name
