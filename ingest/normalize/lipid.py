"""Lipid names → LIPID MAPS shorthand (Liebisch et al. 2020) through pygoslin, plus the species-level name.

Three steps, each a pure function of the name:

1. **Cleaning** (:func:`clean_lipid_name`) takes away what is not part of the lipid: adducts (``+H``, ``[M+H]+``,
   ``[M-H]-``), polarity tags (``(pos)``, ``(neg)``) and trailing charges; it rewrites the vendor spellings the team
   meets into shorthand pygoslin can read: upper-case or spelled-out classes (``CER``, ``Ceramide``, ``hex_cer``,
   ``TAG``), underscore forms (``hex_cer_24_0`` → ``HexCer 24:0``), chain prefixes (``C24:1``) and ``_`` between a
   sphingoid base and its N-acyl chain (``SM(d18:1_24:1)``: the base is always told apart from the acyl chain, so
   ``_`` carries no "position unknown" meaning there and ``/`` is correct).
   Sphingoid bases in d/t/m notation become shorthand 2020 (``d18:1`` → ``18:1;O2``).
2. **Parsing**: a fast path for the names most files hold — plain, ether and plasmalogen glycerophospholipids and
   glycerolipids (``PC 16:0/18:1``, ``PE(16:0_18:1)``, ``PE P-18:0/20:4``, ``TG 52:2``) and ceramide-based
   sphingolipids in shorthand (``Cer 18:1;O2/16:0``) — which gives exactly pygoslin's output (differential tests check
   this) at ~50,000 names/s instead of pygoslin's ~1,000; everything else goes to pygoslin's ``LipidParser`` (all its
   grammars), and its output is reparsed until it is a fixed point.
3. **Output**: the name at the most specific level the input gives (``PC(16:0/18:1)`` → ``PC 16:0/18:1``;
   ``PC(16:0/18:1(9Z))`` keeps the double-bond position), chains of a molecular species (``_``, positions unknown)
   sorted as pygoslin sorts them so ``PC 18:1_16:0`` and ``PC 16:0_18:1`` are one feature, the species-level name
   (``PC 34:1``) and the class (``PC``). ``normalized_name`` and ``display_name`` are both that shorthand name.

**A bare sphingolipid chain** (``CER 16:0``, ``Ceramide C24:1``, ``SM 24:1;O2``, ``hex_cer_24_0``): pygoslin reads
``Cer 16:0`` as a *sum composition* (``Cer 16:0;O2``: sixteen carbons for base and acyl together), which no natural
ceramide has — the sphingoid base alone has 16–20 carbons. The earlier system instead forced a d18:1 base on every
name of every class, which mangled ``PC 34:1`` into ``Pc(d18:1/34:1)``. We take the vendor convention (Sciex
Lipidyzer's ``CER(16:0)``, ``SM(24:1)``, ``HCER(24:0)``, Avanti's "C16 ceramide") only where no other reading is
possible: the class is a ceramide-based sphingolipid (Cer, HexCer, GlcCer, GalCer, LacCer, SM; ``DCER``/dihydro
forms get d18:0), exactly one chain is given with no sphingoid-base notation, and it has at most 26 carbons (the
longest common N-acyl chain; real sum compositions start around 30). Then the chain is the N-acyl chain on a
sphingosine (d18:1) base: ``CER 16:0`` → ``Cer 18:1;O2/16:0``, species ``Cer 34:1;O2``. ``Cer 34:1`` and
``Cer 42:2;O2`` stay sum compositions, and no other class is touched.

A name that neither path can read is kept as written (whitespace-trimmed only) with ``parsed=False``: never guessed.
Parsing is cached (``functools.lru_cache``): the function is pure and datasets repeat names across files.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from ingest.normalize import NormalizedFeature

# Longer names are not lipid names we could read, and pygoslin's grammar parser slows down on long junk.
_MAX_PARSE_LENGTH = 200
# The longest common N-acyl chain of a ceramide; a single sphingolipid "chain" longer than this is a sum composition.
_MAX_N_ACYL_CARBONS = 26
_SPHINGOSINE = "18:1;O2"
_SPHINGANINE = "18:0;O2"

# Adducts, polarity tags and charges at the end of a name; removed repeatedly ("PC 34:1 [M+H]+ (pos)").
_ADDUCT_TAIL = re.compile(
    r"""\s*(?:
        \[\s*M\s*(?:[+-]\s*\d*[A-Za-z][A-Za-z0-9]*)*\s*\]\s*\d*[+-]*     # [M+H]+, [M+NH4]1+, [M-H]-, [M+HCOO]-
      | \(\s*(?:pos|neg|positive|negative|[+-])\s*\)                     # (pos), (neg), (+)
      | (?<=[\s)\]\d])[+-]\s*(?:H|Na|K|Li|NH4|Cl|HCOO|CH3COO|AcO|2H|2Na|H-H2O|H2O)   # +H, -H, +NH4, +Na
      | \s+(?:pos|neg|positive|negative)                                 # trailing word
      | \s+\d?[+-]                                                       # " 1+", " -"
      | (?<=[)\]])[+-]                                                   # "...)+"
    )\s*$""",
    re.VERBOSE | re.IGNORECASE,
)
_TRAILING_CHARGE = re.compile(r"(?<=\d)[+-]$")

# hex_cer_24_0, cer_16_0, pc_34_1: class words then carbons_double-bonds.
_UNDERSCORE_FORM = re.compile(r"^(?P<cls>[A-Za-z]+(?:_[A-Za-z]+)*)_(?P<c>\d{1,2})_(?P<db>\d{1,2})$")
# A class word followed by its chains, in parentheses or after whitespace.
_CLASS_AND_CHAINS = re.compile(r"^(?P<cls>[A-Za-z][A-Za-z_-]*?)\s*(?P<rest>\(.*\)|\s.+)$")
_SINGLE_CHAIN = re.compile(r"^C?(?P<c>\d{1,2}):(?P<db>\d{1,2})(?:;O2?)?$")
_PREFIXED_CHAIN = re.compile(r"^C(?P<chain>\d{1,2}:\d{1,2}(?:;O\d?)?)$")
# Sphingoid bases in the older d/t/m notation → shorthand 2020 (d18:1 → 18:1;O2), which pygoslin's fastest grammar
# reads, and which gives d18:0 the same level of detail as d18:1 (pygoslin otherwise writes d18:0 as 18:0;(OH)2 or
# 18:0;1OH,3OH depending on the grammar that read it).
_SPHINGOID_PREFIX = re.compile(r"^(?P<prefix>[dtm])(?P<c>\d{1,2}):(?P<db>\d{1,2})(?=/|$)")
_HYDROXYLS = {"m": "O", "d": "O2", "t": "O3"}
_SPHINGOID_THEN_UNDERSCORE = re.compile(r"^(?P<base>[dtm]\d{1,2}:\d{1,2}|\d{1,2}:\d{1,2};O\d?)_(?P<acyl>.+)$")

# Vendor and spelled-out class names (lower-cased, without "_" and "-") → the shorthand class.
_CLASS_SPELLINGS: dict[str, str] = {
    "cer": "Cer",
    "cers": "Cer",
    "ceramide": "Cer",
    "ceramides": "Cer",
    "hexcer": "HexCer",
    "hcer": "HexCer",
    "hex1cer": "HexCer",
    "hexosylceramide": "HexCer",
    "glccer": "GlcCer",
    "glucosylceramide": "GlcCer",
    "galcer": "GalCer",
    "galactosylceramide": "GalCer",
    "laccer": "LacCer",
    "lcer": "LacCer",
    "lactosylceramide": "LacCer",
    "sm": "SM",
    "sphingomyelin": "SM",
    "pc": "PC",
    "pe": "PE",
    "ps": "PS",
    "pg": "PG",
    "pi": "PI",
    "pa": "PA",
    "lpc": "LPC",
    "lpe": "LPE",
    "lps": "LPS",
    "lpg": "LPG",
    "lpi": "LPI",
    "lpa": "LPA",
    "tg": "TG",
    "tag": "TG",
    "dg": "DG",
    "dag": "DG",
    "mg": "MG",
    "mag": "MG",
    "ce": "CE",
    "che": "CE",
    "ffa": "FA",
    "fa": "FA",
}
# Dihydroceramides: the same class on a sphinganine (d18:0) base.
_DIHYDRO_SPELLINGS = {"dcer", "dhcer", "dihydroceramide", "dihydroceramides"}
_SPHINGOLIPID_CLASSES = frozenset({"Cer", "HexCer", "GlcCer", "GalCer", "LacCer", "SM"})

# Fast path: plain ester chains of the common glycerolipid / glycerophospholipid classes, with as many chains as the
# class has (or one sum composition). Anything else (ethers, oxidations, 0:0 placeholders) goes to pygoslin.
_FAST_CHAIN_COUNT: dict[str, int] = {
    **dict.fromkeys(("PC", "PE", "PS", "PG", "PI", "PA", "DG"), 2),
    **dict.fromkeys(("LPC", "LPE", "LPS", "LPG", "LPI", "LPA"), 1),
    "TG": 3,
}
_FAST_NAME = re.compile(
    r"^(?P<cls>[A-Z]{2,3})(?:\((?P<pchains>[^()]*)\)|\s(?P<schains>[^()\s]*))$",
)
_FAST_CHAIN = re.compile(r"^([1-9]\d?):(\d{1,2})$")
# Ceramide-based sphingolipids in shorthand 2020: "Cer 18:1;O2/16:0" or a sum composition "Cer 34:1;O2".
# (GlcCer and GalCer are left to pygoslin, which folds them into HexCer at this level.)
_FAST_SPHINGO = re.compile(
    r"^(?P<cls>Cer|SM|HexCer|LacCer) (?P<c>[1-9]\d?):(?P<db>\d{1,2});(?P<ox>O[23]?)"
    r"(?:/(?P<ac>[1-9]\d?):(?P<adb>\d{1,2}))?$"
)


def clean_lipid_name(raw: str) -> str:
    """Strip adducts, polarity tags and charges, and rewrite vendor spellings into shorthand pygoslin reads."""
    name = " ".join(raw.split())
    previous = None
    while previous != name:
        previous = name
        name = _ADDUCT_TAIL.sub("", name)
        name = _TRAILING_CHARGE.sub("", name).strip()
    underscore = _UNDERSCORE_FORM.match(name)
    if underscore:
        name = f"{underscore['cls'].replace('_', '')} {underscore['c']}:{underscore['db']}"
    parts = _CLASS_AND_CHAINS.match(name)
    if not parts:
        return name
    key = parts["cls"].replace("_", "").replace("-", "").lower()
    dihydro = key in _DIHYDRO_SPELLINGS
    lipid_class = "Cer" if dihydro else _CLASS_SPELLINGS.get(key)
    if lipid_class is None:
        return name
    chains = parts["rest"].strip()
    if chains.startswith("(") and chains.endswith(")"):
        chains = chains[1:-1].strip()
    if lipid_class in _SPHINGOLIPID_CLASSES:
        single = _SINGLE_CHAIN.match(chains)
        if single and int(single["c"]) <= _MAX_N_ACYL_CARBONS:
            base = _SPHINGANINE if dihydro else _SPHINGOSINE
            return f"{lipid_class} {base}/{single['c']}:{single['db']}"
        underscored = _SPHINGOID_THEN_UNDERSCORE.match(chains)
        if underscored:
            chains = f"{underscored['base']}/{underscored['acyl']}"
        chains = _SPHINGOID_PREFIX.sub(lambda m: f"{m['c']}:{m['db']};{_HYDROXYLS[m['prefix']]}", chains)
    prefixed = _PREFIXED_CHAIN.match(chains)
    if prefixed:
        chains = prefixed["chain"]
    return f"{lipid_class} {chains}"


def _fast_parse(name: str) -> tuple[str, str, str] | None:
    """(name, species, class) for plain names of common classes, exactly as pygoslin prints them; else None."""
    sphingo = _FAST_SPHINGO.match(name)
    if sphingo:
        carbons = int(sphingo["c"]) + int(sphingo["ac"] or 0)
        double_bonds = int(sphingo["db"]) + int(sphingo["adb"] or 0)
        return name, f"{sphingo['cls']} {carbons}:{double_bonds};{sphingo['ox']}", sphingo["cls"]
    match = _FAST_NAME.match(name)
    if not match:
        return None
    text = match["pchains"] if match["pchains"] is not None else match["schains"]
    if text and text[:2] in {"O-", "P-"}:
        return _fast_ether(match["cls"], text)
    lipid_class = match["cls"]
    expected = _FAST_CHAIN_COUNT.get(lipid_class)
    if expected is None or not text:
        return None
    separators = {ch for ch in text if ch in "/_"}
    if len(separators) > 1:
        return None
    pieces = re.split(r"[/_]", text)
    if len(pieces) not in {1, expected}:
        return None
    chains: list[tuple[int, int]] = []
    for piece in pieces:
        chain = _FAST_CHAIN.match(piece)
        if not chain:
            return None
        chains.append((int(chain[1]), int(chain[2])))
    if lipid_class == "DG" and separators == {"/"}:
        return None  # pygoslin writes sn-positioned DG with its empty sn-3 ("DG 16:0/18:1/0:0")
    if separators == {"_"}:
        chains.sort()  # molecular species: positions unknown; pygoslin sorts by carbons, then double bonds
    separator = separators.pop() if separators else "/"
    carbons = sum(c for c, _ in chains)
    double_bonds = sum(db for _, db in chains)
    species = f"{lipid_class} {carbons}:{double_bonds}"
    full = f"{lipid_class} " + separator.join(f"{c}:{db}" for c, db in chains)
    return full, species, lipid_class


def _fast_ether(lipid_class: str, text: str) -> tuple[str, str, str] | None:
    """Ether glycerophospholipids (``PC O-16:0/18:1``, ``PE P-18:0_20:4``, ``PE P-38:4``) as pygoslin prints them.

    The ether chain sits at sn-1, so pygoslin writes ``_`` as ``/``; a plasmalogen (``P-``) has one more double bond
    than its alkyl chain says, and its species is written ``O-`` with that bond counted.
    """
    expected = _FAST_CHAIN_COUNT.get(lipid_class)
    if expected is None or lipid_class in {"DG", "TG"}:
        return None
    ether, chains_text = text[0], text[2:]
    pieces = re.split(r"[/_]", chains_text)
    if len(pieces) not in {1, expected}:
        return None
    chains: list[tuple[int, int]] = []
    for piece in pieces:
        chain = _FAST_CHAIN.match(piece)
        if not chain:
            return None
        chains.append((int(chain[1]), int(chain[2])))
    carbons = sum(c for c, _ in chains)
    double_bonds = sum(db for _, db in chains) + (1 if ether == "P" else 0)
    species = f"{lipid_class} O-{carbons}:{double_bonds}"
    if len(pieces) == 1 and expected > 1:
        return species, species, lipid_class  # a sum composition is written in its O- form
    full = f"{lipid_class} {ether}-" + "/".join(f"{c}:{db}" for c, db in chains)
    return full, species, lipid_class


@functools.cache
def _parser() -> Any:
    # Built once, on first use: loading the grammars takes ~0.2 s. A cache, not state: parse results do not depend
    # on earlier calls.
    from pygoslin.parser.Parser import LipidParser

    return LipidParser()


def _goslin_parse(name: str) -> tuple[str, str, str] | None:
    """(name, species, class) through pygoslin, or None when no grammar reads the name."""
    from pygoslin.domain.LipidLevel import LipidLevel

    try:
        adduct = _parser().parse(name)
        adduct.adduct = None  # adducts are measurement details, not the lipid
        if adduct.lipid.info.level == LipidLevel.MOLECULAR_SPECIES:
            adduct.sort_fatty_acyl_chains()
        full = adduct.get_lipid_string()
        species = adduct.get_lipid_string(LipidLevel.SPECIES)
        lipid_class = adduct.get_lipid_string(LipidLevel.CLASS)
    except Exception:
        # pygoslin raises LipidException for unknown names, and other exceptions for some odd ones; both mean
        # "cannot read this name", which the caller records as unparsed.
        return None
    if not isinstance(full, str) or not full:
        return None
    return full, species, lipid_class


@functools.lru_cache(maxsize=1 << 18)
def _parse_lipid(stripped: str) -> tuple[str, str, str] | None:
    if not stripped or len(stripped) > _MAX_PARSE_LENGTH:
        return None
    cleaned = clean_lipid_name(stripped)
    if not cleaned:
        return None
    parsed = _fast_parse(cleaned)
    if parsed is not None:
        return parsed
    parsed = _goslin_parse(cleaned)
    if parsed is not None and parsed[0] == cleaned:
        return parsed  # the name read back to itself: already a fixed point
    if parsed is None and cleaned != stripped:
        parsed = _goslin_parse(stripped)
    return _fixed_point(parsed)


def _fixed_point(parsed: tuple[str, str, str] | None) -> tuple[str, str, str] | None:
    """Reparse pygoslin's output until it reads back to itself; None if it does not settle.

    pygoslin's output does not always read back to itself (``Cer O-34:1`` → ``Cer 34:1`` → ``Cer 34:1;O2``), and for
    a few odd names it never settles (``SM O-34:1`` gains two oxygens per round). A key must be a fixed point, or
    normalizing a stored name again would move the feature; a name without one is treated as unreadable.
    """
    for _ in range(3):
        if parsed is None:
            return None
        again = _fast_parse(parsed[0]) or _goslin_parse(parsed[0])
        if again == parsed:
            return parsed
        parsed = again
    return None


def normalize_lipid(raw: str) -> NormalizedFeature:
    """Normalize a lipid name into LIPID MAPS shorthand; unreadable names are kept as written (parsed=False)."""
    stripped = raw.strip()
    parsed = _parse_lipid(stripped)
    if parsed is None:
        return NormalizedFeature("lipid", stripped, stripped, None, None, False, {})
    full, species, lipid_class = parsed
    return NormalizedFeature("lipid", full, full, species, lipid_class, True, {})


def lipid_cache_clear() -> None:
    """Forget cached parses (benchmarks measure the cold rate with this)."""
    _parse_lipid.cache_clear()
