"""What a checkpoint folder holds, and where it comes from.

A folder in the jina-colbert-v1-en or ColBERTv2 layout: config.json, weights in
model.safetensors (possibly sharded) or pytorch_model.bin, tokenizer.json (or vocab.txt),
and ColBERT metadata. A hub id resolves through huggingface_hub's cache (downloading
where the network allows); nothing else ever reaches for a hub.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colpg.errors import CheckpointError

__all__ = ["load_weights", "read_colbert_metadata", "read_config", "read_tensors", "resolve_folder"]

logger = logging.getLogger(__name__)

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
HUB_FILES = ["*.json", "*.safetensors", "*.bin", "*.txt", "artifact.metadata"]
SHOWN_NAMES = 8


def resolve_folder(name_or_path: str | Path) -> Path:
    """A local checkpoint folder for ``name_or_path``: the folder itself, or a hub id's cached snapshot.

    Raises:
        CheckpointError: neither a folder nor a hub id that could be found or fetched.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; expected a checkpoint folder (config.json, weights, tokenizer.json)")
    name = str(name_or_path)
    if not HUB_ID.fullmatch(name):
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=HUB_FILES))
    except Exception as exc:  # huggingface_hub raises many kinds: offline, HTTP, missing repo, cache
        raise CheckpointError(
            f"model {name!r} is not a local folder, and huggingface_hub could not find it in its cache or "
            f"download it ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Download it where the network allows and pass the local folder instead."
        ) from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} should hold a JSON object, found {type(data).__name__}")
    return data


def read_config(folder: Path) -> dict[str, Any]:
    """config.json of the checkpoint."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no config.json; is it a checkpoint folder?")
    return _read_json(path)


def read_colbert_metadata(folder: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """ColBERT settings saved with the checkpoint: ``artifact.metadata``, else config.json's ``colbert_config``."""
    path = folder / "artifact.metadata"
    if path.is_file():
        return _read_json(path)
    embedded = config.get("colbert_config")
    return dict(embedded) if isinstance(embedded, Mapping) else {}


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / name for name in _read_json(index).get("weight_map", {}).values()})
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise CheckpointError(f"{folder} has no weights: expected model.safetensors or pytorch_model.bin")


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, by name, on the CPU."""
    tensors: dict[str, torch.Tensor] = {}
    for path in _weight_files(folder):
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                tensors.update(load_file(path))
            else:
                tensors.update(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # safetensors and torch.load report corrupt files with assorted types
            raise CheckpointError(f"cannot read weights from {path}: {exc}") from exc
    return tensors


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


def load_weights(module: nn.Module, tensors: Mapping[str, torch.Tensor], *, source: Path, ignored: Sequence[str] = ()) -> None:
    """Load ``tensors`` into ``module`` exactly: every parameter present, nothing unknown, every shape right.

    ``ignored`` lists name prefixes that may be present and are not used (a pooler, an MLM head).

    Raises:
        CheckpointError: naming the missing, unexpected and mis-shaped tensors.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(name for name in tensors if name not in expected and not name.startswith(tuple(ignored)))
    misshaped = [
        f"{name} {tuple(tensors[name].shape)} (expected {tuple(value.shape)})"
        for name, value in expected.items()
        if name in tensors and tensors[name].shape != value.shape
    ]
    problems = [
        f"{label}: {_listing(names)}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
        if names
    ]
    if problems:
        raise CheckpointError(f"the weights in {source} do not fit a {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict({name: tensors[name] for name in expected}, strict=True)
