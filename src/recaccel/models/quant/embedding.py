"""Row-wise quantized embedding tables: INT8 and INT4, a scale and a bias per row.

The quantized module sits beside the float ones (TorchRec's pattern: parallel modules with a
`from_float` converter), so an artifact can rebuild a quantized model without importing the
optimization stage that produced it.

Lookups run on PyTorch's FBGEMM kernels (`quantized::embedding_bag_{byte,4bit}_rowwise_offsets`)
where the build has them. Those ops belong to the legacy quantized backend that upstream plans
to remove, so a plain-torch path — gather the packed rows, then `q * scale + bias` — gives the
same numbers without them; `lookup_path()` says which one runs. The FBGEMM kernels always sum a
bag whatever their `mode` argument says, so padding (index 0) is masked with per-sample weights.

`quantize_embeddings` turns each `SparseArch` into a `QuantizedSparseArch` (quant/fused.py),
whose single-valued tables of one width share one stacked `QuantizedEmbeddingBag` and one kernel
call; other tables become one `QuantizedEmbeddingBag` each.

Packed row layouts (as FBGEMM's prepack ops write them):
    INT8: D uint8 values, fp32 scale, fp32 bias                 → D + 8 bytes
    INT4: D/2 bytes (two values each, low nibble first), fp16 scale, fp16 bias → D/2 + 4 bytes
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from recaccel.models.layers.embedding import SparseArch

SUPPORTED_BITS = (8, 4)
# How quantize_embeddings lays tables out (see there); artifacts record theirs.
EMBEDDING_LAYOUTS = ("fused", "per-table")


def packed_row_bytes(dim: int, bits: int) -> int:
    """Bytes one packed row takes (see the layouts above)."""
    if bits == 8:
        return dim + 8
    if bits == 4:
        return dim // 2 + 4
    raise ValueError(f"embedding quantization supports {SUPPORTED_BITS} bits, not {bits}")


def packed_parts(
    rows: torch.Tensor, dim: int, bits: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed rows (..., packed width) split into their values (uint8: D of them, or D/2 bytes
    of two INT4 values each), scale and bias ((..., 1) in the layout's float type), as views or
    small copies of the same bytes (the layouts above)."""
    width = dim if bits == 8 else dim // 2
    kind = torch.float32 if bits == 8 else torch.float16
    step = torch.finfo(kind).bits // 8
    scale = rows[..., width : width + step].contiguous().view(kind)
    bias = rows[..., width + step : width + 2 * step].contiguous().view(kind)
    return rows[..., :width], scale, bias


def worth_quantizing(dim: int, bits: int) -> bool:
    """Whether a table of width `dim` shrinks at `bits`: the per-row scale and bias must pay off.

    >>> worth_quantizing(16, 8), worth_quantizing(1, 8), worth_quantizing(3, 4)
    (True, False, False)

    Width-1 tables (first-order weights) would grow from 4 to 9 bytes a row; INT4 needs an even
    width to pack two values per byte.
    """
    if bits == 4 and dim % 2:
        return False
    return packed_row_bytes(dim, bits) < 4 * dim


def _fbgemm_ops_present() -> bool:
    try:
        torch.ops.quantized.embedding_bag_byte_rowwise_offsets  # noqa: B018 (probe the op)
        torch.ops.quantized.embedding_bag_4bit_rowwise_offsets  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


FBGEMM_AVAILABLE = _fbgemm_ops_present()


# The pooling modes a quantized bag computes: the FBGEMM kernels sum; a mean divides by the
# count of real ids. A max bag is left in float.
POOLING_MODES = ("sum", "mean")


class QuantizedEmbeddingBag(nn.Module):
    """A row-wise quantized table that looks up single ids or pooled (summed) bags.

    Args:
        num_embeddings: rows.
        embedding_dim: width D of the float rows it stands for.
        bits: 8 or 4.
        padding_idx: for bags, the id that contributes nothing (0 in recaccel's schema);
            None for single-valued lookups, where index 0 is a real "unknown" row.
        mode: how a bag pools its rows, "sum" (recaccel's own bags) or "mean" (as the float
            bag it stands for; padding is not counted).
    """

    packed: torch.Tensor

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        bits: int,
        padding_idx: int | None = None,
        mode: str = "sum",
    ) -> None:
        super().__init__()
        if mode not in POOLING_MODES:
            raise ValueError(f"quantized bags pool by {POOLING_MODES}, not {mode!r}")
        self.mode = mode
        width = packed_row_bytes(embedding_dim, bits)
        self.register_buffer("packed", torch.zeros(num_embeddings, width, dtype=torch.uint8))
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.bits, self.padding_idx = bits, padding_idx
        self.use_fbgemm = FBGEMM_AVAILABLE

    @classmethod
    def from_float(cls, module: nn.Embedding | nn.EmbeddingBag, bits: int) -> QuantizedEmbeddingBag:
        """Quantize a float table's rows with FBGEMM's prepack (min/max per row)."""
        weight = module.weight.detach().float().contiguous()
        padding_idx = module.padding_idx if isinstance(module, nn.EmbeddingBag) else None
        mode = module.mode if isinstance(module, nn.EmbeddingBag) else "sum"
        out = cls(weight.shape[0], weight.shape[1], bits, padding_idx, mode)
        if bits == 8:
            out.packed.copy_(torch.ops.quantized.embedding_bag_byte_prepack(weight))
        else:
            out.packed.copy_(torch.ops.quantized.embedding_bag_4bit_prepack(weight))
        return out

    def held_weight_count(self) -> int:
        return self.num_embeddings * self.embedding_dim

    def lookup_path(self) -> str:
        return "fbgemm" if self.use_fbgemm else "torch-dequantize"

    def dequantize_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Float rows (..., D) for packed rows (..., packed width): the plain-torch path."""
        packed, scale, bias = packed_parts(rows, self.embedding_dim, self.bits)
        if self.bits == 8:
            values = packed.float()
        else:
            values = torch.stack([packed & 0x0F, packed >> 4], dim=-1).flatten(-2).float()
        return values * scale.float() + bias.float()

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """(B,) ids → (B, D) rows; (B, L) bags → (B, D) sums (or means), padding excluded."""
        pooled = self._lookup(indices)
        if self.mode == "sum" or indices.dim() == 1:
            return pooled
        counted = indices != self.padding_idx if self.padding_idx is not None else indices >= 0
        return pooled / counted.sum(dim=1, keepdim=True).clamp(min=1).to(pooled.dtype)

    def _lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Rows, or each bag's sum."""
        if not self.use_fbgemm:
            rows = self.dequantize_rows(self.packed[indices])  # (B, D) or (B, L, D)
            if indices.dim() == 1:
                return rows
            if self.padding_idx is not None:
                rows = rows * (indices != self.padding_idx).unsqueeze(-1)
            return rows.sum(dim=1)
        batch = indices.shape[0]
        flat = indices.reshape(-1).contiguous()  # a schema column is a strided view
        step = 1 if indices.dim() == 1 else indices.shape[1]
        offsets = torch.arange(0, batch * step, step, dtype=flat.dtype, device=flat.device)
        weights = None
        if indices.dim() > 1 and self.padding_idx is not None:
            weights = (flat != self.padding_idx).float()
        op = (
            torch.ops.quantized.embedding_bag_byte_rowwise_offsets
            if self.bits == 8
            else torch.ops.quantized.embedding_bag_4bit_rowwise_offsets
        )
        out: torch.Tensor = op(self.packed, flat, offsets, per_sample_weights=weights)
        return out

    def extra_repr(self) -> str:
        shape = f"{self.num_embeddings}, {self.embedding_dim}"
        return f"{shape}, bits={self.bits}, mode={self.mode}, path={self.lookup_path()}"


@dataclass(frozen=True)
class QuantizedTable:
    """What `quantize_embeddings` did to one table."""

    name: str
    rows: int
    dim: int
    bits: int | None  # None: kept in float (quantizing would not shrink it)
    float_bytes: int
    bytes: int


def quantize_embeddings(
    model: nn.Module, bits: int, inplace: bool = False, layout: str = "fused"
) -> tuple[nn.Module, list[QuantizedTable]]:
    """Replace every embedding table that shrinks at `bits` with a row-wise quantized one.

    Args:
        model: any model; its `SparseArch`s and any other `nn.Embedding`/`nn.EmbeddingBag`.
        bits: 8 or 4.
        inplace: modify `model` rather than a copy.
        layout: "fused": each `SparseArch` becomes a `QuantizedSparseArch`, its single-valued
            tables of one width stacked and looked up in one kernel call
            (models/quant/fused.py); "per-table": one `QuantizedEmbeddingBag` in place of
            each table (the layout of artifacts made before fused lookups). Tables outside a
            `SparseArch` are quantized one by one in either layout.

    Returns:
        the model (a copy unless `inplace`) and, per table, what was done and the bytes before
        and after. Both layouts hold the same packed rows and give the same outputs.
    """
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"embedding quantization supports {SUPPORTED_BITS} bits, not {bits}")
    if layout not in EMBEDDING_LAYOUTS:
        raise ValueError(f"embedding layouts are {EMBEDDING_LAYOUTS}, not {layout!r}")
    # Here, not at the top: fused.py builds on this module's QuantizedEmbeddingBag.
    from recaccel.models.quant.fused import QuantizedSparseArch

    target = model if inplace else copy.deepcopy(model)
    report: list[QuantizedTable] = []
    done: list[str] = []  # prefixes of SparseArchs replaced: their tables are reported
    for name, module in list(target.named_modules()):
        if any(name.startswith(outer) for outer in done):
            continue
        fuse = layout == "fused" and isinstance(module, SparseArch)
        if fuse and QuantizedSparseArch.applies_to(module, bits):
            target = _replace(target, name, QuantizedSparseArch.from_float(module, bits))
            prefix = f"{name}." if name else ""
            report += [
                _entry(f"{prefix}{child}", table, bits)
                for child, table in module.named_modules()
                if isinstance(table, nn.Embedding | nn.EmbeddingBag)
            ]
            done.append(prefix)
        elif isinstance(module, nn.Embedding | nn.EmbeddingBag):
            if isinstance(module, nn.EmbeddingBag) and module.mode not in POOLING_MODES:
                report.append(_entry(name, module, None))  # a max bag stays in float
                continue
            report.append(_entry(name, module, bits))
            if report[-1].bits is not None:
                target = _replace(target, name, QuantizedEmbeddingBag.from_float(module, bits))
    return target, report


def _entry(name: str, table: nn.Embedding | nn.EmbeddingBag, bits: int | None) -> QuantizedTable:
    """The report line for a float `table` quantized at `bits` where that shrinks it (None:
    kept in float)."""
    rows, dim = table.weight.shape
    float_bytes = rows * dim * 4
    if bits is None or not worth_quantizing(dim, bits):
        return QuantizedTable(name, rows, dim, None, float_bytes, float_bytes)
    return QuantizedTable(name, rows, dim, bits, float_bytes, rows * packed_row_bytes(dim, bits))


def _replace(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """`model` with its submodule `name` replaced by `module` ("": `module` itself)."""
    if not name:
        return module
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)
    return model
