"""``colpg search``, ``colpg rerank`` and ``colpg eval``: queries from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from colpg.constants import DEFAULT_FUSION, DEFAULT_MATCH
from colpg.errors import ColpgError
from colpg.params import LARGE_INDEX_TOKENS, cells_for, default_params

if TYPE_CHECKING:
    from colpg.explain import TokenMatch


from colpg.cli.apps import app, reported_errors


def _where_option(where: str | None, params: list[str]) -> tuple[str, dict[str, str]] | None:
    """``--where "documents.metadata ->> 'lang' = :lang" --param lang=en``: a fragment and its bound values."""
    if where is None:
        if params:
            raise typer.BadParameter("--param needs --where")
        return None
    values = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param takes NAME=VALUE, got {item!r}")
        values[key] = value
    return where, values


# Search's parameters (colpg.params); None takes the default for k.
NCELLS = typer.Option(
    None,
    "--ncells",
    min=1,
    help=f"Centroids probed per query token (default: {cells_for(0)}, or {cells_for(LARGE_INDEX_TOKENS)} in indexes of"
    f" {LARGE_INDEX_TOKENS:,} tokens or more).",
)
NRERANK = typer.Option(None, "--nrerank", min=1, help="Most documents reranked at the rerank store's precision (default by k).")
MARGIN = typer.Option(
    None, "--margin", min=0.0, help="Rerank only documents within this much per query token of the k-th best first-stage score."
)
SLACK = typer.Option(
    None,
    "--slack",
    min=0.0,
    help="Stop the rerank once the rest cannot reach the top k, with this much slack per query token"
    f" (default {default_params(10).slack}; inf: never).",
)
CELL_MARGIN = typer.Option(
    None,
    "--cell-margin",
    min=0.0,
    help="Of its --ncells nearest centroids, each query token probes those within this of its nearest's score"
    f" (default {default_params(10).cell_margin}; inf: all of them).",
)
RESIDUAL = typer.Option(
    None,
    "--residual/--no-residual",
    help="Score the candidates whole from their resident residuals before the rerank (default: where the index's"
    " rerank rows outgrow the row cache).",
)


@app.command("search")
def search(
    name: str = typer.Argument(..., help="Index to search."),
    query: str = typer.Argument(..., help="The query text."),
    k: int = typer.Option(10, "-k", help="Number of hits."),
    where: str | None = typer.Option(
        None,
        help="SQL condition over `documents` (colpg.documents), values as :names. Trusted SQL: it runs as your database role,"
        " so never build it from others' input (pass values with --param).",
    ),
    param: list[str] = typer.Option(
        [], "--param", help="NAME=VALUE for a :NAME in --where (repeatable; values are text, CAST them in SQL)."
    ),
    explain: bool = typer.Option(False, help="Show, per query token, the document token that matched it best."),
    exact: bool = typer.Option(False, help="Score every document exactly (slow on large indexes)."),
    ncells: int | None = NCELLS,
    nrerank: int | None = NRERANK,
    margin: float | None = MARGIN,
    slack: float | None = SLACK,
    residual: bool | None = RESIDUAL,
    cell_margin: float | None = CELL_MARGIN,
    fulltext: int = typer.Option(0, "--fulltext", min=0, help="Hybrid search: union colpg's candidates with this many full-text ones."),
    fusion: str = typer.Option(
        DEFAULT_FUSION, "--fusion", help="With --fulltext: rank the union by rrf (reciprocal-rank fusion) or maxsim."
    ),
    match: str = typer.Option(
        DEFAULT_MATCH, "--match", help="With --fulltext: documents with any of the query's words, or all (quotes, or, -word)."
    ),
) -> None:
    """Search an index and print the hits."""
    from colpg.hybrid import Hybrid
    from colpg.index import Index

    with reported_errors():
        where_clause = _where_option(where, param)
        hybrid = Hybrid(fulltext=fulltext, fusion=fusion, match=match) if fulltext else None  # type: ignore[arg-type]  # checked by Hybrid
        hits = Index(name).search(
            query,
            k,
            where=where_clause,
            explain=explain,
            exact=exact,
            ncells=ncells,
            nrerank=nrerank,
            margin=margin,
            slack=slack,
            residual=residual,
            cell_margin=cell_margin,
            hybrid=hybrid,
        )
        if not hits:
            typer.echo("no hits")
        for hit in hits:
            _print_hit(hit.rank, hit.score, hit.external_id, hit.text, hit.explanation)


def _print_hit(rank: int, score: float, external_id: str, text: str | None, explanation: list[TokenMatch] | None) -> None:
    """One hit on a line (rank, score, id, the text's start), then its token matches when explained."""
    head = " ".join((text or "").split())
    typer.echo(f"{rank:>3}  {score:8.3f}  {external_id:<16} {head[:90]}")
    if explanation:
        matches = [m for m in explanation if m.query_token not in ("[MASK]", "[CLS]", "[SEP]", "[unused0]")]
        shown = ", ".join(f"{m.query_token}->{m.document_token} {m.similarity:.2f}" for m in matches)
        carried = sum(m.similarity for m in matches)
        typer.echo(f"{'':>14}matches: {shown}")
        typer.echo(f"{'':>14}({carried:.2f} of the score {score:.2f} from these; the rest from [CLS], the [Q] marker and [MASK] padding)")


@app.command("rerank")
def rerank(
    name: str = typer.Argument(..., help="Index holding the documents (with --texts: whose model encodes the texts)."),
    query: str = typer.Argument(..., help="The query text."),
    ids: list[str] | None = typer.Argument(None, help="Ids of the candidate documents (from any first stage)."),
    texts: Path | None = typer.Option(
        None, "--texts", exists=True, dir_okay=False, help="Rank these texts instead (corpus.jsonl, id<TAB>text .tsv, or one per line)."
    ),
    k: int | None = typer.Option(None, "-k", min=1, help="Number of hits (default: every candidate)."),
    explain: bool = typer.Option(False, help="Show, per query token, the document token that matched it best."),
) -> None:
    """Rank candidate documents by exact MaxSim over their stored tokens (or, with --texts, texts in no index).

    Ids the index does not hold, or holds without tokens, are listed on stderr; the exit status is 1 when none could be ranked.
    """
    from colpg.index import Index

    with reported_errors():
        if bool(ids) == (texts is not None):
            raise typer.BadParameter("give either candidate ids or --texts FILE")
        index = Index(name)
        if texts is not None:
            from colpg.collection import read_collection
            from colpg.reranking import rerank_texts

            documents = read_collection(texts)
            for found in rerank_texts(query, [d.text for d in documents], index.encoder, k, explain=explain):
                document = documents[found.position]
                _print_hit(found.rank, found.score, document.external_id, document.text, found.explanation)
            return
        reranked = index.rerank(query, ids or [], k, explain=explain)
        for hit in reranked.hits:
            _print_hit(hit.rank, hit.score, hit.external_id, hit.text, hit.explanation)
        for label, missing in (("unknown (not in the index)", reranked.unknown), ("not indexed (no tokens yet)", reranked.not_indexed)):
            if missing:
                typer.secho(f"{label}: {' '.join(missing)}", fg=typer.colors.YELLOW, err=True)
        if not reranked.hits:
            raise ColpgError(f"none of the {len(set(ids or []))} ids could be ranked in {name!r}")


@app.command("eval")
def evaluate_index(
    name: str = typer.Argument(..., help="Index holding the dataset's corpus."),
    dataset: Path = typer.Option(..., "--dataset", exists=True, file_okay=False, help="BEIR folder: queries.jsonl, qrels.tsv."),
    k: int = typer.Option(10, "-k", help="Depth of the run compared with exact search."),
    vs_exact: bool = typer.Option(False, "--vs-exact", help="Also compare with exact MaxSim (stored and original vectors)."),
    queries: int | None = typer.Option(None, help="Evaluate only the first N judged queries."),
    ncells: int | None = NCELLS,
    nrerank: int | None = NRERANK,
    margin: float | None = MARGIN,
    slack: float | None = SLACK,
    residual: bool | None = RESIDUAL,
    cell_margin: float | None = CELL_MARGIN,
) -> None:
    """nDCG@10, MRR@10 and Recall@100 on a BEIR dataset; with --vs-exact, recall@k against exact search."""
    from colpg.evaluate import evaluate
    from colpg.index import Index

    with reported_errors():
        report = evaluate(
            Index(name),
            dataset,
            k=k,
            vs_exact=vs_exact,
            max_queries=queries,
            ncells=ncells,
            nrerank=nrerank,
            margin=margin,
            slack=slack,
            residual=residual,
            cell_margin=cell_margin,
        )
        typer.echo(f"{report.queries} queries, k={report.k}, search p50 {report.search_ms_p50:.1f} ms (excluding query encoding)")
        if (warning := report.coverage_warning()) is not None:
            typer.echo(warning, err=True)
        typer.echo("| run | nDCG@10 | MRR@10 | R@100 |")
        typer.echo("|---|---|---|---|")
        runs = [("colpg (approximate)", report.approximate)]
        if vs_exact:
            runs += [("exact, stored tokens", report.exact_stored), ("exact, original vectors", report.exact_original)]
        for label, figures in runs:
            typer.echo(f"| {label} | {figures['nDCG@10']:.4f} | {figures['MRR@10']:.4f} | {figures['R@100']:.4f} |")
        if vs_exact:
            typer.echo(f"recall@{k} vs exact on stored tokens (pruning loss): {report.recall_vs_exact_stored:.4f}")
            typer.echo(f"recall@{k} vs exact on original vectors (pruning + compression): {report.recall_vs_exact_original:.4f}")
