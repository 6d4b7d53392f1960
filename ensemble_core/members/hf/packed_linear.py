"""Linear layers whose float32 weights are laid out once for oneDNN (`PackedLinear`). On the CPU, a dense
float32 layer fed 2 to 8 tokens takes MKL's general path, at twice the cost of one token; packed, such a pass
costs little more than one token, and one token is faster too (measured in docs/RESULTS.md, "Speculative
decoding"). The packed weights live in memory (a copy, not the memory-mapped file)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def packing_unavailable(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why weights on `device` in `dtype` cannot be packed, or None when they can."""
    if device.type != "cpu":
        return f"packed weights are a CPU layout; this member runs on {device}"
    if dtype != torch.float32:
        return (
            f"packed weights are for float32 (bfloat16 already runs through oneDNN); this member is {dtype}"
        )
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    return None


class PackedLinear(nn.Module):
    """`nn.Linear` with its weight and bias in oneDNN's layout; inputs of any leading shape."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        bias = linear.bias.detach() if linear.bias is not None else weight.new_zeros(self.out_features)
        self.packed_weight = weight.to_mkldnn()
        self.packed_bias = bias.to_mkldnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).contiguous().to_mkldnn()
        out = torch._C._nn.mkldnn_linear(flat, self.packed_weight, self.packed_bias).to_dense()
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


def pack_linears(model: Any) -> int:
    """Replace every `nn.Linear` in `model` (the output layer included) by a `PackedLinear`; how many."""
    return replace_linears(model, PackedLinear)


def replace_linears(model: Any, convert: Callable[[nn.Linear], nn.Module]) -> int:
    """Replace every `nn.Linear` in `model` by `convert(layer)`; how many were replaced."""
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    for parent, name, child in targets:
        setattr(parent, name, convert(child))
    return len(targets)
