"""Reading collections and evaluation files from disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from colpg.collection import read_collection
from colpg.errors import CollectionError
from colpg.evaluate import read_queries


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path: Path) -> None:
    # MS MARCO passages hold U+0085 unescaped; str.splitlines would cut the record there.
    texts = ["Greek \u03c0\u03c1\u03bf\u0085 (pro) before", "a\u2028b", "plain"]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": str(i), "title": "", "text": t}, ensure_ascii=False) + "\r\n" for i, t in enumerate(texts)), encoding="utf-8")
    documents = read_collection(path)
    assert [d.text for d in documents] == texts
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"_id": "q", "text": "x\u0085y"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_queries(queries) == {"q": "x\u0085y"}


def test_tsv_and_plain_lines(tmp_path: Path) -> None:
    tsv = tmp_path / "c.tsv"
    tsv.write_text("id\ttext\n7\tseven\n8\teight\n", encoding="utf-8")
    assert [(d.external_id, d.text) for d in read_collection(tsv)] == [("7", "seven"), ("8", "eight")]
    lines = tmp_path / "c.txt"
    lines.write_text("one\n\ntwo\n", encoding="utf-8")
    assert [d.text for d in read_collection(lines)] == ["one", "two"]


def test_broken_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": "1", "text": "ok"}\n{"_id": \n', encoding="utf-8")
    with pytest.raises(CollectionError, match="line 2 is not JSON"):
        read_collection(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.jsonl", '{"_id": "a", "text": "ok"}\n\n{"_id": "b", "text": " "}\n', r"c.jsonl line 3 \(b\) is empty"),
        ("c.jsonl", '{"_id": "a", "text": "ok"}\n{"_id": "a", "text": "again"}\n', r"'a' appears twice \(.*c.jsonl line 1 and .*c.jsonl line 2\)"),
        ("c.jsonl", '{"text": "no id"}\n', r"c.jsonl line 1 has no id"),
        ("c.tsv", "id\ttext\n1\tone\n2\t \n", r"c.tsv line 3 \(2\) is empty"),
    ],
)
def test_document_errors_in_files_name_the_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_collection(path)


def test_a_byte_that_is_not_utf8_is_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff here\n")
    with pytest.raises(CollectionError, match=r"line 3 is not UTF-8: byte 5 of the line is b'\\xff'"):
        read_collection(path)
