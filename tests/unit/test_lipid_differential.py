"""Differential test of the lipid fast path against the pygoslin path, on generated names of every class it claims.

The fast path (``ingest.normalize.lipid._fast_parse``) may answer only where it gives exactly what the pygoslin path
gives after the same output checks. ``generated_names()`` writes names for every class and form the fast path
claims — diacyl glycerophospholipids, lyso forms, DG, TG, ether and plasmalogen forms, ceramide-based sphingolipids
in shorthand — over chain lengths 2–26 and 0–6 double bonds (impossible ones included, so the plausibility check is
compared too), with ``/``, ``_``, sum compositions, parentheses and spaces. Run the module as a script for the full
set and its figures: ``python -m tests.unit.test_lipid_differential``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from ingest.normalize.lipid import _fast_parse, _read

_GPL = ("PC", "PE", "PS", "PG", "PI", "PA")
_LYSO = ("LPC", "LPE", "LPS", "LPG", "LPI", "LPA")
_SPHINGO = ("Cer", "SM", "HexCer", "LacCer")
_CHAINS = [(c, db) for c in range(2, 27, 2) for db in range(0, 7)] + [(15, 0), (17, 1), (19, 0), (21, 0)]


def generated_names(sample: int | None = None, seed: int = 13) -> Iterator[str]:
    """Names of every class the fast path claims; ``sample`` draws that many chain sets per class and form."""
    rng = random.Random(seed)

    def chain_sets(count: int) -> list[tuple[tuple[int, int], ...]]:
        if sample is None:
            return (
                list(itertools.product(_CHAINS, repeat=count))
                if count < 3
                else [tuple(rng.sample(_CHAINS, 3)) for _ in range(3000)]
            )
        return [tuple(rng.choice(_CHAINS) for _ in range(count)) for _ in range(sample)]

    def text(chains: tuple[tuple[int, int], ...], sep: str) -> str:
        return sep.join(f"{c}:{db}" for c, db in chains)

    for cls, count in [*((c, 2) for c in _GPL), ("DG", 2), ("TG", 3), *((c, 1) for c in _LYSO)]:
        for chains in chain_sets(count):
            for sep in ("/", "_") if count > 1 else ("/",):
                body = text(chains, sep)
                yield f"{cls} {body}"
                yield f"{cls}({body})"
            total = (sum(c for c, _ in chains), sum(db for _, db in chains))
            yield f"{cls} {total[0]}:{total[1]}"
            if cls not in {"DG", "TG"}:
                for ether in ("O-", "P-"):
                    yield f"{cls} {ether}{text(chains, '/')}"
                    yield f"{cls} {ether}{text(chains, '_')}"
                    yield f"{cls} {ether}{total[0]}:{total[1]}"
    for cls in _SPHINGO:
        for (base_c, base_db), ox in itertools.product(
            [(16, 0), (17, 1), (18, 0), (18, 1), (18, 2), (20, 1)], ("O", "O2", "O3")
        ):
            acyls = _CHAINS if sample is None else rng.sample(_CHAINS, min(sample, len(_CHAINS)))
            for acyl_c, acyl_db in acyls:
                yield f"{cls} {base_c}:{base_db};{ox}/{acyl_c}:{acyl_db}"
                yield f"{cls} {base_c + acyl_c}:{base_db + acyl_db};{ox}"


def compare(names: Iterator[str]) -> tuple[int, int, int, list[str]]:
    """(names compared, names the fast path answered, disagreements, first disagreeing names)."""
    compared = fast_answered = 0
    disagreements: list[str] = []
    for name in names:
        compared += 1
        if _fast_parse(name) is None:
            continue
        fast_answered += 1
        if _read(name) != _read(name, use_fast_path=False):
            disagreements.append(name)
    return compared, fast_answered, len(disagreements), disagreements[:10]


def test_the_fast_path_agrees_with_pygoslin_on_generated_names_of_every_class_it_claims() -> None:
    compared, answered, disagreeing, examples = compare(generated_names(sample=12))
    print(f"lipid differential (sample): {compared} names compared, {answered} fast, {disagreeing} disagreements")
    assert answered > 0.8 * compared / 2, "the generator should exercise the fast path"
    assert disagreeing == 0, examples


if __name__ == "__main__":
    compared, answered, disagreeing, examples = compare(generated_names())
    print(f"lipid differential (full): {compared} names compared, {answered} fast, {disagreeing} disagreements")
    for name in examples:
        print("  disagrees:", name, _read(name), _read(name, use_fast_path=False))
