"""Device policy in one place: the GPU when there is one, half precision there, float32 on the CPU."""

from __future__ import annotations

import torch

__all__ = ["default_device", "default_dtype", "resolve_device"]


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    return default_device() if device is None else torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (bf16 where the caller asks for it), fp32 on the CPU where half precision is slow."""
    return torch.float16 if device.type == "cuda" else torch.float32
