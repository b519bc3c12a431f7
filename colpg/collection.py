"""Collections: what the indexer takes in, from Python or from a file.

Python: a list of strings (ids are their positions, as in ColBERT), of ``(id, text)``
pairs, or of mappings with ``id``/``_id``, ``text`` (and optional ``title`` and
``metadata``). Files: BEIR ``corpus.jsonl``, a TSV of ``id<TAB>text``, or plain lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colpg.errors import CollectionError, DocumentError, EncodingError

__all__ = ["CollectionDocument", "documents_from", "read_collection"]


@dataclass(frozen=True)
class CollectionDocument:
    """One document to index: the application's id, its text and metadata."""

    external_id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _from_mapping(item: Mapping[str, Any], place: str) -> CollectionDocument:
    identifier = item.get("id", item.get("_id", item.get("external_id")))
    if identifier is None:
        raise DocumentError(f"{place} has no id (expected an 'id' or '_id' key)")
    text = item.get("text")
    if not isinstance(text, str):
        raise DocumentError(f"{place} ({identifier}) has a {type(text).__name__} text, expected str")
    title = item.get("title")
    if isinstance(title, str) and title.strip():
        text = f"{title.strip()} {text}"
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise DocumentError(f"{place} ({identifier}) has {type(metadata).__name__} metadata, expected a mapping")
    return CollectionDocument(str(identifier), text, dict(metadata))


def documents_from(collection: Iterable[Any], place: Callable[[int], str] | None = None) -> list[CollectionDocument]:
    """Normalise a Python collection, rejecting what cannot be indexed before anything is written.

    Errors name an item by ``place(position)``: "document 3" (its list position, which is also
    the id of a bare string) unless the caller knows better, such as a file's line number.

    Raises:
        DocumentError: an item of an unknown shape, a missing id, or an id given twice, naming its position.
        EncodingError: an empty text.
    """
    if isinstance(collection, str | bytes):
        raise DocumentError("expected a collection of documents, got a single string; wrap it in a list")
    name = place or (lambda position: f"document {position}")
    documents: list[CollectionDocument] = []
    for position, item in enumerate(collection):
        if isinstance(item, CollectionDocument):
            document = item
        elif isinstance(item, str):
            document = CollectionDocument(str(position), item)
        elif isinstance(item, Mapping):
            document = _from_mapping(item, name(position))
        elif isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], str):
            document = CollectionDocument(str(item[0]), item[1])
        else:
            raise DocumentError(f"{name(position)} is a {type(item).__name__}; expected str, (id, text) or a mapping")
        if not document.text.strip():
            raise EncodingError(f"{name(position)} ({document.external_id}) is empty")
        documents.append(document)
    seen: dict[str, int] = {}
    for position, document in enumerate(documents):
        if document.external_id in seen:
            raise DocumentError(
                f"document id {document.external_id!r} appears twice ({name(seen[document.external_id])} and {name(position)})"
            )
        seen[document.external_id] = position
    return documents


def read_lines(path: Path) -> list[str]:
    """The file's lines, split at newlines only.

    ``str.splitlines`` also splits at U+0085, U+2028 and other separators that JSON strings
    may hold unescaped (MS MARCO passages do), which would cut records in half.
    """
    lines = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                lines.append(raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as exc:
                raise CollectionError(
                    f"{path} line {number} is not UTF-8: byte {exc.start + 1} of the line is {raw[exc.start : exc.start + 1]!r}"
                ) from exc
    return lines


def read_collection(path: Path) -> list[CollectionDocument]:
    """Read BEIR corpus.jsonl (``.jsonl``), ``id<TAB>text`` (``.tsv``), or one document per line (anything else)."""
    try:
        lines = read_lines(path)
    except OSError as exc:
        raise CollectionError(f"cannot read collection {path}: {exc}") from exc
    if path.suffix == ".jsonl":
        items: list[Any] = []
        numbers: list[int] = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise CollectionError(f"{path} line {number} is not JSON: {exc}") from exc
                numbers.append(number)
        return documents_from(items, lambda position: f"{path} line {numbers[position]}")
    if path.suffix == ".tsv":
        pairs = []
        for number, line in enumerate(lines, start=1):
            identifier, tab, text = line.partition("\t")
            if not tab:
                raise CollectionError(f"{path} line {number} has no tab between id and text")
            pairs.append((identifier, text))
        first = 1
        if pairs and pairs[0][0].lower() in {"id", "pid", "_id", "doc_id"}:
            pairs, first = pairs[1:], 2  # a header row
        return documents_from(pairs, lambda position: f"{path} line {position + first}")
    numbers = [number for number, line in enumerate(lines, start=1) if line.strip()]
    return documents_from([lines[n - 1] for n in numbers], lambda position: f"{path} line {numbers[position]}")
