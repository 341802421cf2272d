"""The documents retrieval searches, and how they are cut into chunks.

A document set is a tuple of ``Document``: the bundled passages (``assets/retrieval/``: invented facts
about the fictional town of Marrowby, and public-domain Genesis and *Hamlet*), the user's pasted text,
and text files the user uploaded. An upload is read only from inside the upload folders the caller
names (gradio's own temporary folder by default): any other path is refused, whatever it points to,
so a request can never make the server read one of its own files.

``chunk_documents`` cuts every document into windows of ``size`` words (or model tokens) that overlap
by ``overlap``; each ``Chunk`` keeps its character span in its document, so a view can show the cut.

    >>> [c.text for c in chunk_documents([Document("d", "a b c d e")], Chunking(size=3, overlap=1))]
    ['a b c', 'c d e']
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from explorer.core.errors import InputError
from explorer.core.tokens import encode

ASSETS = Path(__file__).resolve().parents[3] / "assets" / "retrieval"
BUNDLED = {"facts": "facts.txt", "public domain": "public_domain.txt"}
DOCUMENT_SETS = ("facts", "public domain", "both", "none")  # "none": only the user's own text
MAX_DOCUMENT_CHARS = 200_000  # characters of one pasted or uploaded document
MAX_UPLOAD_BYTES = 1 * 2**20
MAX_CHUNKS = 5_000  # chunks of one document set (each is embedded by the model when the index is built)
UNITS = ("words", "tokens")
MIN_SIZE, MAX_SIZE = 2, 256


@dataclass(frozen=True)
class Document:
    """A named text; ``origin`` says where it came from (``facts``, ``public domain``, ``pasted``, ``uploaded``)."""

    name: str
    text: str
    origin: str = "pasted"


@dataclass(frozen=True)
class Chunk:
    """``text`` is ``document``'s characters ``start:end``; ``index`` its place in the chunked set."""

    index: int
    document: str
    text: str
    start: int
    end: int
    origin: str = "pasted"


@dataclass(frozen=True)
class Chunking:
    """Windows of ``size`` words or model tokens (``unit``), each starting ``size - overlap`` after the last."""

    size: int = 60
    overlap: int = 10
    unit: str = "words"

    def validate(self) -> Chunking:
        if self.unit not in UNITS:
            raise InputError(f"Chunks are measured in {' or '.join(UNITS)}, not {self.unit!r}.")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise InputError(f"The chunk size must be a whole number from {MIN_SIZE} to {MAX_SIZE} {self.unit}.")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or not 0 <= self.overlap < self.size:
            raise InputError(
                f"The overlap must be a whole number from 0 to {self.size - 1} (less than the chunk size)."
            )
        return self


DEFAULT_CHUNKING = Chunking()


# ---------------------------------------------------------------- the bundled set


def parse_passages(text: str, origin: str) -> tuple[Document, ...]:
    """Passages separated by blank lines, each starting with a ``## title`` line."""
    docs = []
    for block in re.split(r"\n\s*\n", text.strip()):
        title, _, body = block.partition("\n")
        docs.append(Document(title.removeprefix("## ").strip(), " ".join(body.split()), origin))
    return tuple(docs)


@cache
def bundled(name: str) -> tuple[Document, ...]:
    """The bundled passages ``facts`` or ``public domain`` (see ``assets/retrieval/README.md``)."""
    return parse_passages((ASSETS / BUNDLED[name]).read_text(encoding="utf-8"), name)


def document_set(
    name: str, pasted: str = "", uploads: Sequence[str | Path] = (), upload_dirs=None
) -> tuple[Document, ...]:
    """The bundled set ``name`` (one of ``DOCUMENT_SETS``) plus the pasted text and the uploaded files.

    Refuses, with a sentence, an empty result: there is nothing to search.
    """
    if name not in DOCUMENT_SETS:
        raise InputError(f"Unknown document set {name!r}; pick one of: {', '.join(DOCUMENT_SETS)}.")
    docs: list[Document] = []
    for part in ("facts", "public domain"):
        if name in (part, "both"):
            docs.extend(bundled(part))
    if pasted is not None and not isinstance(pasted, str):
        raise InputError(f"The pasted text must be a string, not {type(pasted).__name__}.")
    if pasted and pasted.strip():
        docs.append(Document("your text", _checked_document(pasted, "pasted text"), "pasted"))
    for path in uploads:
        docs.append(read_upload(path, upload_dirs))
    if not docs:
        raise InputError("The document set is empty: pick a bundled set, paste a text or upload a file to search.")
    return tuple(docs)


def _checked_document(text: str, what: str) -> str:
    if len(text) > MAX_DOCUMENT_CHARS:
        raise InputError(f"The {what} has {len(text):,} characters; at most {MAX_DOCUMENT_CHARS:,} can be searched.")
    if "\x00" in text:
        raise InputError(f"The {what} holds NUL bytes: it looks like a binary file, not text.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(f"The {what} holds an invalid character (a lone surrogate at position {err.start}).") from err
    return text


# ---------------------------------------------------------------- uploads


def upload_roots() -> tuple[Path, ...]:
    """Where uploaded files land: gradio's temporary folder (``GRADIO_TEMP_DIR``, else ``<tmp>/gradio``)."""
    return (Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio"),)


def read_upload(path: str | Path, upload_dirs: Iterable[str | Path] | None = None) -> Document:
    """The text of an uploaded file, read only if it lies (links resolved) inside one of ``upload_dirs``
    (``upload_roots()`` when None). Any other path is refused unread, with the same sentence whether or
    not it exists, so that the answer says nothing about the server's files."""
    roots = [Path(d).resolve() for d in (upload_roots() if upload_dirs is None else upload_dirs)]
    try:
        real = Path(path).resolve(strict=False)
    except (OSError, RuntimeError, TypeError, ValueError) as err:
        raise InputError("Only files uploaded here can be searched.") from err
    if not any(real != root and real.is_relative_to(root) for root in roots):
        raise InputError("Only files uploaded here can be searched.")
    if not real.is_file():
        raise InputError("The uploaded file is gone (uploads are kept for a while only): upload it again.")
    if real.stat().st_size > MAX_UPLOAD_BYTES:
        raise InputError(
            f"The uploaded file is {real.stat().st_size / 2**20:.1f} MB; at most 1 MB of text is searched."
        )
    try:
        text = real.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError("The uploaded file is not UTF-8 text; upload a plain .txt file.") from err
    return Document(Path(path).name, _checked_document(text, "uploaded file"), "uploaded")


# ---------------------------------------------------------------- chunking


def _spans(text: str, chunking: Chunking, tokenizer) -> list[tuple[int, int]]:
    """Character spans of the units (words or tokens) of ``text``."""
    if chunking.unit == "words":
        return [m.span() for m in re.finditer(r"\S+", text)]
    _, offsets = encode(tokenizer, text, add_special_tokens=False)
    return [(a, b) for a, b in offsets if b > a]


def chunk_documents(
    documents: Sequence[Document], chunking: Chunking = DEFAULT_CHUNKING, tokenizer=None
) -> tuple[Chunk, ...]:
    """Every document cut into windows (see ``Chunking``); a document shorter than one window is one chunk."""
    chunking = chunking.validate()
    if chunking.unit == "tokens" and tokenizer is None:
        raise InputError("Chunking by tokens needs a model's tokenizer: load a model first.")
    step = chunking.size - chunking.overlap
    chunks: list[Chunk] = []
    for doc in documents:
        spans = _spans(doc.text, chunking, tokenizer)
        for first in range(0, max(1, len(spans) - chunking.overlap), step):
            window = spans[first : first + chunking.size]
            if not window:
                break
            start, end = window[0][0], window[-1][1]
            chunks.append(Chunk(len(chunks), doc.name, doc.text[start:end], start, end, doc.origin))
            if len(chunks) > MAX_CHUNKS:
                raise InputError(
                    f"These documents make more than {MAX_CHUNKS:,} chunks; use larger chunks or less text."
                )
    if not chunks:
        raise InputError("The document set holds no words to search.")
    return tuple(chunks)


def fingerprint(documents: Sequence[Document]) -> str:
    """A short hash of a document set's names, origins and texts: the index cache's key."""
    h = hashlib.blake2b(digest_size=12)
    for doc in documents:
        for part in (doc.name, doc.origin, doc.text):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
    return h.hexdigest()
