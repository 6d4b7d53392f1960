"""Linear layers with int8 weights (`quantization="int8"`): weight-only, one scale per output row, computed by
torch's own int8 weight-only matrix product for bfloat16 inputs (`torch._weight_int8pack_mm`). A decode step
reads half the bytes of bfloat16; on the CPU a qwen05 step costs about half (measured in docs/RESULTS.md,
"Speculative decoding"), which is what a drafter needs. The int8 weights live in memory (a copy, not the
memory-mapped file)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ensemble_core.members.hf.packed_linear import replace_linears

Quantization = Literal["int8"]
"""How a member's linear weights may be quantised at load (`HFMember(quantization=...)`)."""


def int8_unavailable(quantization: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why weights on `device` in `dtype` cannot be quantised as `quantization`, or None when they can."""
    if quantization != "int8":
        return f"quantization {quantization!r} is not offered (only 'int8')"
    if device.type != "cpu":
        return f"int8 weights use torch's CPU kernel; this member runs on {device}"
    if dtype != torch.bfloat16:
        return f"int8 weights take bfloat16 inputs (the kernel is slow for others); this member is {dtype}"
    if not hasattr(torch, "_weight_int8pack_mm"):
        return f"this torch ({torch.__version__}) has no int8 weight kernel (torch._weight_int8pack_mm)"
    return None


class Int8Linear(nn.Module):
    """`nn.Linear` with int8 weights and one scale per output row (symmetric, round to nearest); the bias
    stays in the layer's dtype. Inputs of any leading shape."""

    weight: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)

    @classmethod
    def quantize(cls, linear: nn.Linear) -> Int8Linear:
        """The int8 form of `linear` (its largest weight in each row maps to 127)."""
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
        quantized = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(quantized, scales.to(linear.weight.dtype), bias)

    def rows(self, index: slice | torch.Tensor) -> Int8Linear:
        """The layer restricted to some output rows (a view for a slice), e.g. a narrowed output layer."""
        bias = None if self.bias is None else self.bias[index]
        return Int8Linear(self.weight[index].contiguous(), self.scales[index].contiguous(), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).contiguous()
        out = torch._weight_int8pack_mm(flat, self.weight, self.scales.to(x.dtype))
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize_linears(model: Any) -> int:
    """Replace every `nn.Linear` in `model` (the output layer included) by an `Int8Linear`; how many."""
    return replace_linears(model, Int8Linear.quantize)
