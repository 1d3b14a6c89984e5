"""Lipid names → LIPID MAPS shorthand (Liebisch et al. 2020) through pygoslin, plus the species-level name.

Three steps, each a pure function of the name:

1. **Cleaning** (:func:`clean_lipid_name`) takes away what is not part of the lipid — adducts (``+H``, ``[M+H]+``,
   ``[M-H]-``), polarity tags (``(pos)``, ``(neg)``) and trailing charges — and rewrites the vendor spellings into
   shorthand pygoslin reads (docs/names.md has the table):

   * LipidSearch: ``Hex1Cer``/``Hex2Cer``, ``AcCa`` (→ ``CAR``), ``So``/``Sph`` (→ ``SPB``), ``ChE``, ``ZyE``
     (zymosteryl ester → ``SE 27:2/…``), ether chains ``16:0e``/``18:0p`` (pygoslin reads those);
   * MS-DIAL 4: hydroxyl counts ``;2O``/``;3O`` (→ ``;O2``/``;O3``), ontology prefixes ``Cer-NS``/``Cer_NS`` and
     ``Cer-NDS`` (the base is written in the name, so the prefix adds nothing); MS-DIAL 5: ``PC 34:1|PC 16:0_18:1``
     (species and molecular species of one annotation; the most specific one is kept when they agree);
   * Lipidyzer: ``CER(16:0)``, ``DCER``, ``HCER``, ``LCER``, ``TAG52:2-FA18:1`` (one known chain and the rest as a sum:
     ``TG 18:1_34:1``), ``FFA``, ``DAG``, ``MAG``;
   * Biocrates: ``PC aa C36:2`` (diacyl, species), ``PC ae C38:4`` (acyl-alkyl: ``PC O-38:4``), ``lysoPC a C16:0``;
   * LIPID MAPS and the older notation: ``PC(16:0/18:1(9Z))``, sphingoid bases ``d18:1``/``t18:0``/``m18:1`` (→
     ``18:1;O2`` …, and the base's ``(4E)`` is dropped with the hydroxyl positions, as pygoslin does for the
     shorthand-2020 form), ``_`` between a sphingoid base and its N-acyl chain (always told apart, so ``/``).

   **Heavy labels** (deuterated internal standards: ``PC 15:0_18:1(d7)``, ``LPC 18:1(d7)``, ``SM(d18:1/18:1(d9))``,
   ``PC 15:0-18:1-d7``) become pygoslin's isotope suffix ``[M[2]H7]``, which stays in the key *and* the species: a
   labelled standard is never the endogenous lipid. The label is also returned in ``external_ids["heavy_label"]``
   so the scorer can leave standards out.
2. **Parsing**: a fast path for the names most files hold — plain, ether and plasmalogen glycerophospholipids and
   glycerolipids (``PC 16:0/18:1``, ``PE(16:0_18:1)``, ``PE P-18:0/20:4``, ``TG 52:2``) and ceramide-based
   sphingolipids in shorthand (``Cer 18:1;O2/16:0``) — which gives exactly what the pygoslin path gives (a
   differential test on generated names of every class it claims checks this, tests/unit/test_lipid_differential.py)
   at ~50,000 names/s instead of ~1,000; everything else goes to pygoslin's ``LipidParser`` (all its grammars).
3. **Output**, then checks. The name at the most specific level the input gives, with chains of a molecular species
   (``_``) sorted as pygoslin sorts them; the species-level name; the class. Then:

   * nothing is invented: pygoslin writes ``MG 18:1`` as ``MG 18:1/0:0/0:0`` and ``DG 16:0/18:1`` as
     ``DG 16:0/18:1/0:0``; ``0:0`` placeholders the input did not write are removed (LIPID MAPS' own ``0:0``, as in
     ``PC(18:1(9Z)/0:0)`` → ``LPC 18:1(9Z)/0:0``, is kept: it says which position is free);
   * stereo-specific hexoses are kept: pygoslin folds ``GlcCer 18:1;O2/16:0`` into ``HexCer``; the written class is
     put back;
   * chemically impossible chains are refused: a chain (or a sum) of ``c`` carbons holds at most ``c // 2`` double
     bonds (``PC 4:8`` is junk), and a name must start with a class (``0`` and ``42`` are not lipids);
   * the result must be a fixed point (normalizing the key again gives the key), or the name is refused.

**A bare sphingolipid chain** (``CER 16:0``, ``Ceramide C24:1``, ``hex_cer_24_0``, Biocrates ``SM C24:1``): the
vendor convention (Sciex Lipidyzer's ``CER(16:0)``, ``DCER(16:0)``, ``HCER(24:0)``, ``LCER(16:0)``, Avanti's "C16
ceramide") reads the one chain as the N-acyl chain on a sphingosine (d18:1; dihydro spellings d18:0) base. We take it
only for a *vendor spelling* — a class word that is not the shorthand class as written (``CER``, ``Ceramide``,
``HCER``, ``hex_cer``) or a ``C``-prefixed chain (Biocrates) — with exactly one chain, **no** sphingoid-base or
hydroxyl notation, at most 26 carbons. A name spelled in shorthand (``Cer 18:1``, ``Cer(16:0)``, ``SM 24:1``,
``SM(24:1)``, ``HexCer 24:0``, labelled or not) is species notation, and stays the species pygoslin reads
(``Cer 18:1;O2``, ``SM 24:1;O2``): rewriting it as a structure would change its sum formula (``Cer 18:1`` is C18,
``Cer 18:1;O2/18:1`` C36). This is also how Lipidyzer's ``SM(24:1)`` reads, since it is spelled exactly like the
shorthand species; write it ``SM(d18:1/24:1)`` to say the chain. ``Cer 24:1;O2`` is a species too (the C6
ceramide ``Cer 18:1;O2/6:0``).

A name that cannot be read is kept as written (whitespace-trimmed only) with ``parsed=False``: never guessed.
Parsing is cached (``functools.lru_cache``): the function is pure and datasets repeat names across files.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

from ingest.normalize import NormalizedFeature

# Longer names are not lipid names we could read, and pygoslin's grammar parser slows down on long junk.
_MAX_PARSE_LENGTH = 200
# The longest common N-acyl chain of a ceramide; a single sphingolipid "chain" longer than this is a sum composition.
_MAX_N_ACYL_CARBONS = 26
_SPHINGOSINE = "18:1;O2"
_SPHINGANINE = "18:0;O2"


class ParsedLipid(NamedTuple):
    """A read lipid name: the key (most specific level given), its species, its class, its heavy label if any."""

    name: str
    species: str
    lipid_class: str
    heavy_label: str | None = None


# Adducts, polarity tags and charges at the end of a name; removed repeatedly ("PC 34:1 [M+H]+ (pos)").
# "[M[2]H7]" (an isotope label, no + or -) is not an adduct and is kept.
_ADDUCT_TAIL = re.compile(
    r"""\s*(?:
        \[\s*M\s*(?:[+-]\s*\d*[A-Za-z][A-Za-z0-9]*)+\s*\]\s*\d*[+-]*     # [M+H]+, [M+NH4]1+, [M-H]-, [M+HCOO]-
      | \(\s*(?:pos|neg|positive|negative|[+-])\s*\)                     # (pos), (neg), (+)
      | (?<=[\s)\]\d])[+-]\s*(?:H|Na|K|Li|NH4|Cl|HCOO|CH3COO|AcO|2H|2Na|H-H2O|H2O)   # +H, -H, +NH4, +Na
      | \s+(?:pos|neg|positive|negative)                                 # trailing word
      | \s+\d?[+-]                                                       # " 1+", " -"
      | (?<=[)\]])[+-]                                                   # "...)+"
    )\s*$""",
    re.VERBOSE | re.IGNORECASE,
)
_TRAILING_CHARGE = re.compile(r"(?<=\d)[+-]$")

# Deuterium labels written on a chain or at the end: "18:1(d7)", "15:0-18:1-d7", "PC 33:1 d7", "(d9)".
_CHAIN_LABEL = re.compile(r"(?<=\d)\(d(?P<n>\d{1,2})\)")
_TAIL_LABEL = re.compile(r"(?:[-_\s]|(?<=\)))\(?d(?P<n>\d{1,2})\)?$")
_ISOTOPE_SUFFIX = re.compile(r"(?P<label>\[M(?:\[\d+\][A-Z][a-z]?\d*)+\])$")

# hex_cer_24_0, cer_16_0, pc_34_1: class words then carbons_double-bonds.
_UNDERSCORE_FORM = re.compile(r"^(?P<cls>[A-Za-z]+(?:_[A-Za-z]+)*)_(?P<c>\d{1,2})_(?P<db>\d{1,2})$")
# Lipidyzer: "TAG52:2-FA18:1" (the species and the one chain its fragment shows).
_LIPIDYZER_TAG = re.compile(r"^TAG\s*\(?(?P<c>\d{2}):(?P<db>\d{1,2})[-/]FA(?P<fc>\d{1,2}):(?P<fdb>\d{1,2})\)?$")
# Biocrates: "PC aa C36:2", "PC ae C38:4", "lysoPC a C16:0", "lysoPC e C18:0".
_BIOCRATES = re.compile(
    r"^(?P<lyso>lyso)?(?P<cls>PC|PE|PS|PG|PI|PA)\s+(?P<link>aa|ae|a|e)\s+C(?P<c>\d{1,2}):(?P<db>\d{1,2})$",
    re.IGNORECASE,
)
# MS-DIAL 4 ontology prefixes on ceramides whose base is written out: "Cer-NS d18:1/16:0", "Cer_NDS d18:0/16:0".
_MSDIAL_ONTOLOGY = re.compile(r"^(?P<cls>Cer|HexCer|Hex2Cer|SM)[-_](?:NS|NDS)\b\s*", re.IGNORECASE)
# MS-DIAL 4 hydroxyl counts: ";2O" → ";O2".
_MSDIAL_HYDROXYLS = re.compile(r";(?P<n>[23])O\b")
# A class word followed by its chains, in parentheses or after whitespace.
_CLASS_AND_CHAINS = re.compile(r"^(?P<cls>[A-Za-z][A-Za-z0-9_-]*?)\s*(?P<rest>\(.*\)|\s.+)$")
_SINGLE_CHAIN = re.compile(r"^C?(?P<c>\d{1,2}):(?P<db>\d{1,2})$")
_PREFIXED_CHAIN = re.compile(r"^C(?P<chain>\d{1,2}:\d{1,2}(?:;O\d?)?)$")
# Sphingoid bases in the older d/t/m notation → shorthand 2020 (d18:1 → 18:1;O2), which pygoslin's fastest grammar
# reads, and which gives d18:0 the same level of detail as d18:1. A base's double-bond position ("d18:1(4E)") is
# dropped with it, as pygoslin drops it from "18:1(4E);O2".
_SPHINGOID_PREFIX = re.compile(r"^(?P<prefix>[dtm])(?P<c>\d{1,2}):(?P<db>\d{1,2})(?:\(\d+[EZ]?\))?(?=/|_|$)")
_HYDROXYLS = {"m": "O", "d": "O2", "t": "O3"}
_SPHINGOID_THEN_UNDERSCORE = re.compile(r"^(?P<base>\d{1,2}:\d{1,2};O\d?)_(?P<acyl>.+)$")
# "15:0-18:1" (Avanti, some LIPID MAPS exports): two chains joined by "-"; positions are not asserted → "_".
_DASH_BETWEEN_CHAINS = re.compile(r"(?<=[\d)])-(?=\d{1,2}:\d)")

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
    "hex2cer": "Hex2Cer",
    "hex3cer": "Hex3Cer",
    "glccer": "GlcCer",
    "glucosylceramide": "GlcCer",
    "galcer": "GalCer",
    "galactosylceramide": "GalCer",
    "laccer": "LacCer",
    "lcer": "LacCer",
    "lactosylceramide": "LacCer",
    "sm": "SM",
    "sphingomyelin": "SM",
    "so": "SPB",
    "sph": "SPB",
    "spb": "SPB",
    "pc": "PC",
    "pe": "PE",
    "ps": "PS",
    "pg": "PG",
    "pi": "PI",
    "pa": "PA",
    "lpc": "LPC",
    "lysopc": "LPC",
    "lpe": "LPE",
    "lysope": "LPE",
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
    "acca": "CAR",
    "car": "CAR",
}
# Dihydroceramides: the same class on a sphinganine (d18:0) base.
_DIHYDRO_SPELLINGS = {"dcer", "dhcer", "dihydroceramide", "dihydroceramides"}
_SPHINGOLIPID_CLASSES = frozenset({"Cer", "HexCer", "GlcCer", "GalCer", "LacCer", "Hex2Cer", "Hex3Cer", "SM", "SPB"})
# Sterol esters by sterol: the shorthand writes them "SE <sterol>/<chain>" (cholesterol 27:1, zymosterol 27:2).
_STEROL_ESTERS = {"zye": "27:2"}
_STEREO_HEXOSE_CLASSES = ("GlcCer", "GalCer")
_DIACYL_GLYCEROPHOSPHOLIPIDS = frozenset({"PC", "PE", "PS", "PG", "PI", "PA"})

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
# (GlcCer and GalCer are left to the pygoslin path.)
_FAST_SPHINGO = re.compile(
    r"^(?P<cls>Cer|SM|HexCer|LacCer) (?P<c>[1-9]\d?):(?P<db>\d{1,2});(?P<ox>O[23]?)"
    r"(?:/(?P<ac>[1-9]\d?):(?P<adb>\d{1,2}))?$"
)
_CHAIN_NUMBERS = re.compile(r"(?<![\d\[])(\d+):(\d+)")


def _heavy(count: str) -> str:
    return f"[M[2]H{int(count)}]"


def clean_lipid_name(raw: str) -> str:
    """Strip adducts, polarity tags and charges, and rewrite vendor spellings into shorthand pygoslin reads."""
    name = " ".join(raw.split())
    previous = None
    while previous != name:
        previous = name
        name = _ADDUCT_TAIL.sub("", name)
        name = _TRAILING_CHARGE.sub("", name).strip()
    label = ""
    isotope = _ISOTOPE_SUFFIX.search(name)
    if isotope:
        label = isotope["label"]
        name = name[: isotope.start()].strip()
    else:
        counts = [m["n"] for m in _CHAIN_LABEL.finditer(name)]
        name = _CHAIN_LABEL.sub("", name)
        tail = _TAIL_LABEL.search(name)
        if tail and not counts:
            counts = [tail["n"]]
            name = name[: tail.start()].strip()
        if counts:
            label = _heavy(str(sum(int(n) for n in counts)))
    return _clean_body(name) + label


def _clean_body(name: str) -> str:
    """The vendor-spelling rewrites of :func:`clean_lipid_name`, on a name without adducts and labels."""
    name = _MSDIAL_HYDROXYLS.sub(lambda m: f";O{m['n']}", name)
    name = _MSDIAL_ONTOLOGY.sub(lambda m: f"{m['cls']} ", name)
    tag = _LIPIDYZER_TAG.match(name)
    if tag:
        rest_c, rest_db = int(tag["c"]) - int(tag["fc"]), int(tag["db"]) - int(tag["fdb"])
        if rest_c <= 0 or rest_db < 0:
            return name  # not a TAG with that chain: left for pygoslin to refuse
        return f"TG {tag['fc']}:{tag['fdb']}_{rest_c}:{rest_db}"
    biocrates = _BIOCRATES.match(name)
    if biocrates:
        lyso = "L" if biocrates["lyso"] else ""
        ether = "O-" if biocrates["link"].lower() in {"ae", "e"} else ""
        return f"{lyso}{biocrates['cls'].upper()} {ether}{biocrates['c']}:{biocrates['db']}"
    underscore = _UNDERSCORE_FORM.match(name)
    if underscore:
        name = f"{underscore['cls'].replace('_', '')} {underscore['c']}:{underscore['db']}"
    parts = _CLASS_AND_CHAINS.match(name)
    if not parts:
        return name
    key = parts["cls"].replace("_", "").replace("-", "").lower()
    dihydro = key in _DIHYDRO_SPELLINGS
    lipid_class = "Cer" if dihydro else _CLASS_SPELLINGS.get(key)
    chains = parts["rest"].strip()
    if chains.startswith("(") and chains.endswith(")"):
        chains = chains[1:-1].strip()
    if key in _STEROL_ESTERS and _SINGLE_CHAIN.match(chains):
        return f"SE {_STEROL_ESTERS[key]}/{chains.removeprefix('C')}"
    if lipid_class is None:
        return name
    chains = _DASH_BETWEEN_CHAINS.sub("_", chains)
    if (
        lipid_class in _DIACYL_GLYCEROPHOSPHOLIPIDS
        and len(pieces := re.split(r"[/_]", chains)) == 2
        and "0:0" in pieces
    ):
        lipid_class = f"L{lipid_class}"  # LIPID MAPS writes lyso forms as "PC(18:1(9Z)/0:0)": the class is LPC
    if lipid_class in _SPHINGOLIPID_CLASSES:
        single = _SINGLE_CHAIN.match(chains)
        vendor_spelling = parts["cls"] != lipid_class or chains.startswith("C")
        if single and vendor_spelling and lipid_class != "SPB" and int(single["c"]) <= _MAX_N_ACYL_CARBONS:
            base = _SPHINGANINE if dihydro else _SPHINGOSINE
            return f"{lipid_class} {base}/{single['c']}:{single['db']}"
        chains = _SPHINGOID_PREFIX.sub(lambda m: f"{m['c']}:{m['db']};{_HYDROXYLS[m['prefix']]}", chains)
        underscored = _SPHINGOID_THEN_UNDERSCORE.match(chains)
        if underscored:
            chains = f"{underscored['base']}/{underscored['acyl']}"
    prefixed = _PREFIXED_CHAIN.match(chains)
    if prefixed:
        chains = prefixed["chain"]
    return f"{lipid_class} {chains}"


def _fast_parse(name: str) -> ParsedLipid | None:
    """(name, species, class) for plain names of common classes, exactly as pygoslin prints them; else None."""
    sphingo = _FAST_SPHINGO.match(name)
    if sphingo:
        carbons = int(sphingo["c"]) + int(sphingo["ac"] or 0)
        double_bonds = int(sphingo["db"]) + int(sphingo["adb"] or 0)
        return ParsedLipid(name, f"{sphingo['cls']} {carbons}:{double_bonds};{sphingo['ox']}", sphingo["cls"])
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
    if lipid_class == "DG" and separators == {"/"} and match["pchains"] is not None:
        return None  # pygoslin's LIPID MAPS grammar reads "DG(16:0/18:1)" (no sn-3) as a molecular species
    if separators == {"_"}:
        chains.sort()  # molecular species: positions unknown; pygoslin sorts by carbons, then double bonds
    separator = separators.pop() if separators else "/"
    carbons = sum(c for c, _ in chains)
    double_bonds = sum(db for _, db in chains)
    species = f"{lipid_class} {carbons}:{double_bonds}"
    full = f"{lipid_class} " + separator.join(f"{c}:{db}" for c, db in chains)
    return ParsedLipid(full, species, lipid_class)


def _fast_ether(lipid_class: str, text: str) -> ParsedLipid | None:
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
        return ParsedLipid(species, species, lipid_class)  # a sum composition is written in its O- form
    full = f"{lipid_class} {ether}-" + "/".join(f"{c}:{db}" for c, db in chains)
    return ParsedLipid(full, species, lipid_class)


@functools.cache
def _parser() -> Any:
    # Built once, on first use: loading the grammars takes ~0.2 s. A cache, not state: parse results do not depend
    # on earlier calls.
    from pygoslin.parser.Parser import LipidParser

    return LipidParser()


def _goslin_parse(name: str) -> ParsedLipid | None:
    """(name, species, class, heavy label) as pygoslin prints them, or None when no grammar reads the name.

    Adducts are dropped (measurement details, not the lipid); an isotope label, which pygoslin keeps on the same
    adduct object, is kept and printed (``[M[2]H7]``).
    """
    from pygoslin.domain.LipidLevel import LipidLevel

    parser = _parser()  # outside the try: pygoslin that cannot be imported is an installation error, not a name
    try:
        adduct = parser.parse(name)
        heavy: str | None = None
        if adduct.adduct is not None:
            isotopes = adduct.adduct.get_heavy_isotope_string()
            if isotopes:
                adduct.adduct.adduct_string = ""
                adduct.adduct.sum_formula = ""
                adduct.adduct.charge = 0
                heavy = f"[M{isotopes}]"
            else:
                adduct.adduct = None
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
    return ParsedLipid(full, species, lipid_class, heavy)


def _drop_invented_placeholders(name: str) -> str:
    """Remove ``0:0`` chains from a printed name ("MG 18:1/0:0/0:0" → "MG 18:1"), keeping any label suffix."""
    head, _, chains = name.partition(" ")
    label = ""
    isotope = _ISOTOPE_SUFFIX.search(chains)
    if isotope:
        label, chains = isotope["label"], chains[: isotope.start()]
    pieces = re.split(r"([/_])", chains)
    kept: list[str] = []
    for i in range(0, len(pieces), 2):
        if pieces[i] == "0:0":
            continue
        if kept:
            kept.append(pieces[i - 1])
        kept.append(pieces[i])
    return f"{head} {''.join(kept)}{label}" if kept else name


def _plausible(name: str) -> bool:
    """False when a chain or sum of c carbons claims more than c // 2 double bonds (``PC 4:8``)."""
    for carbons, double_bonds in _CHAIN_NUMBERS.findall(name):
        c, db = int(carbons), int(double_bonds)
        if db > c // 2 and not (c == 0 and db == 0):
            return False
    return True


# A 0:0 chain as a whole token: "10:0" and "20:0" hold the characters "0:0" but are no empty chain.
_EMPTY_CHAIN = re.compile(r"(?<![\d.])0:0(?!\d)")


def _finish(parsed: ParsedLipid, cleaned: str) -> ParsedLipid | None:
    """The output checks of step 3: no invented ``0:0``, stereo hexoses kept, impossible chains refused."""
    full, species, lipid_class, heavy = parsed
    if not _EMPTY_CHAIN.search(cleaned) and _EMPTY_CHAIN.search(full):
        full = _drop_invented_placeholders(full)
    written = cleaned.split(" ", 1)[0].split("(", 1)[0]
    if written in _STEREO_HEXOSE_CLASSES and lipid_class == "HexCer":
        full = written + full.removeprefix("HexCer")
        species = written + species.removeprefix("HexCer")
        lipid_class = written
    if not (_plausible(full) and _plausible(species)):
        return None
    return ParsedLipid(full, species, lipid_class, heavy)


def _read(cleaned: str, use_fast_path: bool = True) -> ParsedLipid | None:
    """One reading of a cleaned name: fast path (unless told not to), else pygoslin, then the output checks."""
    if not cleaned[:1].isalpha():
        return None  # "0", "42": a lipid name starts with its class
    parsed = _fast_parse(cleaned) if use_fast_path else None
    if parsed is None:
        parsed = _goslin_parse(cleaned)
    if parsed is None:
        return None
    return _finish(parsed, cleaned)


def _read_msdial5(cleaned: str) -> ParsedLipid | None:
    """MS-DIAL 5's "PC 34:1|PC 16:0_18:1": the most specific reading, when all readings share one species."""
    readings = [_read(clean_lipid_name(part)) for part in cleaned.split("|")]
    if any(reading is None for reading in readings):
        return None
    found = [reading for reading in readings if reading is not None]
    if len({reading.species for reading in found}) != 1:
        return None
    return max(found, key=lambda reading: (reading.name != reading.species, len(reading.name)))


@functools.lru_cache(maxsize=1 << 18)
def _parse_lipid(stripped: str) -> ParsedLipid | None:
    if not stripped or len(stripped) > _MAX_PARSE_LENGTH or "\x00" in stripped:
        return None
    parsed = _read_msdial5(stripped) if "|" in stripped else _read(clean_lipid_name(stripped))
    if parsed is None:
        return None
    return _fixed_point(parsed)


def _fixed_point(parsed: ParsedLipid) -> ParsedLipid | None:
    """``parsed`` when its key reads back to exactly itself, else None.

    A key must be a fixed point, or normalizing a stored name again would move the feature. pygoslin's output does
    not always read back to itself, and where it drifts the molecule drifts too: ``Cer O-34:1`` is read with one
    oxygen (C34H67NO) and printed ``Cer 34:1``, which reads back as ``Cer 34:1;O2`` (C34H67NO3); ``SM O-34:1`` gains
    two oxygens per round. Following the drift would give a name a key with another sum formula, so a name whose
    reading moves is treated as unreadable.
    """
    again = _read(clean_lipid_name(parsed.name))
    return parsed if again == parsed else None


def parse_lipid(raw: str) -> ParsedLipid | None:
    """The reading of a lipid name (key, species, class, heavy label), or None when it cannot be read."""
    return _parse_lipid(raw.strip())


def normalize_lipid(raw: str) -> NormalizedFeature:
    """Normalize a lipid name into LIPID MAPS shorthand; unreadable names are kept as written (parsed=False)."""
    stripped = raw.strip()
    parsed = _parse_lipid(stripped)
    if parsed is None:
        return NormalizedFeature("lipid", stripped, stripped, None, None, False, {})
    ids = {"heavy_label": parsed.heavy_label} if parsed.heavy_label else {}
    return NormalizedFeature("lipid", parsed.name, parsed.name, parsed.species, parsed.lipid_class, True, ids)


def lipid_cache_clear() -> None:
    """Forget cached parses (benchmarks measure the cold rate with this)."""
    _parse_lipid.cache_clear()
