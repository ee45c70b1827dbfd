"""Embedding lookups in the form ONNX exports well: plain gathers, no loops, no bit-casts.

`onnx_lookups(model)` swaps, in a shared copy made for export, each table for what it computes:

- an `nn.EmbeddingBag` on recaccel's fixed-length padded bags → gathers and a sum. The dynamo
  exporter would translate the bag as an ONNX `Loop` over rows (onnxscript's
  `aten_embedding_bag`), which ORT runs as a subgraph once per row.
- a row-wise quantized table (`QuantizedEmbeddingBag`, INT8 or INT4) → the same packed rows as
  three initializers (values, scale, bias), gathered by id and dequantized after the gather:
  `rows = values[ids] * scale[ids] + bias[ids]`. The table stays quantized in the graph, so the
  ONNX file and the runtime's memory hold the INT8 or INT4 bytes, not a float copy. INT4 values
  are two to a byte; each byte is looked up in a 256 × 2 table of the values it holds: one
  gather where splitting it with arithmetic (floor(b / 16), b − 16·high) took five nodes, in
  about the same time (BitShift and BitwiseAnd on uint8 are not implemented by every runtime).
  Dequantizing costs: the INT4 DeepFM's 100-row call takes about twice the float one's on ORT
  (docs/weights-in-memory.md). ONNX's DequantizeLinear cannot express these rows: its zero
  point is an integer and they have a float bias (their minimum). ONNX Runtime's contrib
  GatherBlockQuantized would fuse gather and dequantize, but only ONNX Runtime runs it; this
  form runs on ONNX Runtime, OpenVINO and Triton's ONNX backend alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recaccel.errors import RecaccelError
from recaccel.models.quant.embedding import QuantizedEmbeddingBag, packed_parts

# Bags up to this many ids are summed one id slot at a time: L gathers of (B, D) rows and L − 1
# adds. ONNX Runtime's ReduceSum over the middle axis of the (B, L, D) gather costs about as much
# per row whatever D is, and made the multi-hot bags half of a small model's per-candidate cost
# (MovieLens' genres, L = 6: 220–290 µs at 1,000 rows gathered and reduced, 60–110 µs slot by
# slot, on a 2-core EPYC). Longer bags keep the one gather: 2L nodes cost per-node overhead at
# small batches. 8 is a judgement; only L = 6 was measured.
PER_SLOT_MAX_BAG = 8


class UnsupportedLookupError(RecaccelError):
    """A table's pooling or call has no ONNX form here."""

    def __init__(self, op: str, hint: str) -> None:
        super().__init__(f"{op} has no ONNX form", hint)
        self.op = op


class FloatRows(nn.Module):
    """Rows of a float table by id: one Gather. Shares the table's weight (no copy)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class QuantizedRows(nn.Module):
    """Rows of a row-wise quantized table by id, dequantized after the gather.

    The packed rows (quant/embedding.py's layouts) are split once into values (R, D) uint8 for INT8
    or (R, D/2) uint8 for INT4, and a scale and bias (R, 1) per row in the precision the layout
    stores them (fp32 for INT8, fp16 for INT4): the same bytes as the packed table.
    """

    values: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor
    nibbles: torch.Tensor

    def __init__(self, table: QuantizedEmbeddingBag) -> None:
        super().__init__()
        self.dim, self.bits = table.embedding_dim, table.bits
        values, scale, bias = packed_parts(table.packed.detach(), self.dim, self.bits)
        self.register_buffer("values", values.contiguous())
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)
        # Byte b holds two INT4 values, b & 15 first (FBGEMM's order) and b >> 4.
        byte = torch.arange(256)
        self.register_buffer("nibbles", torch.stack([byte & 15, byte >> 4], dim=1).float())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids of any shape (...) → float rows (..., D)."""
        packed = F.embedding(ids, self.values)  # (..., D) or (..., D/2) uint8
        if self.bits == 8:
            values = packed.float()
        else:  # each byte's two values from the 256-entry table: one gather, no arithmetic
            values = F.embedding(packed.long(), self.nibbles).flatten(-2)  # (..., D)
        scale = F.embedding(ids, self.scale).float()
        bias = F.embedding(ids, self.bias).float()
        return values * scale + bias


class GatheredBag(nn.Module):
    """A table looked up by single ids (B,) → (B, D), or pooled over fixed-length bags (B, L)
    → (B, D), as gathers and a sum. Padding ids are left out of the pooling, and a bag of
    padding alone is zeros, as PyTorch's bags compute them. Short bags are summed slot by slot
    (`PER_SLOT_MAX_BAG`), with no mask when the padding row is zeros (PyTorch initialises it so
    and never trains it; a quantized zero row dequantizes to zeros), since it adds nothing."""

    def __init__(
        self, rows: nn.Module, shape: tuple[int, int], padding_idx: int | None, mode: str
    ) -> None:
        super().__init__()
        # The table's shape, as the modules that call it read it (quant/fused.py).
        self.num_embeddings, self.embedding_dim = shape
        if mode not in ("sum", "mean", "max"):
            raise UnsupportedLookupError(f"EmbeddingBag(mode={mode!r})", "use mode='sum'")
        self.rows, self.padding_idx, self.mode = rows, padding_idx, mode
        with torch.no_grad():
            padding = None if padding_idx is None else rows(torch.tensor([padding_idx]))
        self.zero_padding_row = padding is None or not bool(padding.any())

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        if offsets is not None or ids.dim() not in (1, 2):
            raise UnsupportedLookupError("EmbeddingBag with offsets", "pass (batch, bag) ids")
        if ids.dim() == 1:
            looked_up: torch.Tensor = self.rows(ids)
            return looked_up
        kept = (
            torch.ones_like(ids, dtype=torch.bool)
            if self.padding_idx is None
            else ids != self.padding_idx
        )  # (B, L)
        if self.mode == "max":
            rows = self.rows(ids)  # (B, L, D)
            best = rows.masked_fill(~kept.unsqueeze(-1), float("-inf")).amax(dim=1)
            return torch.where(kept.any(dim=1, keepdim=True), best, torch.zeros_like(best))
        total = self._sum(ids, kept)  # (B, D)
        if self.mode == "sum":
            return total
        return total / kept.sum(dim=1, keepdim=True).clamp(min=1).to(total.dtype)

    def _sum(self, ids: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """The bag's rows summed, padding left out."""
        mask = kept.float()
        if ids.shape[1] > PER_SLOT_MAX_BAG:
            rows: torch.Tensor = self.rows(ids)  # (B, L, D)
            return (rows * mask.unsqueeze(-1)).sum(dim=1)
        total: torch.Tensor | None = None
        for slot in range(ids.shape[1]):
            row = self.rows(ids[:, slot])  # (B, D)
            if not self.zero_padding_row:
                row = row * mask[:, slot : slot + 1]
            total = row if total is None else total + row
        assert total is not None  # a bag has at least one slot (the schema's L >= 1)
        return total


def gathered(table: nn.Module) -> GatheredBag | None:
    """The ONNX form of `table`, or None when it is not a table this module rewrites."""
    if isinstance(table, QuantizedEmbeddingBag):
        shape = (table.num_embeddings, table.embedding_dim)
        return GatheredBag(QuantizedRows(table), shape, table.padding_idx, table.mode)
    if isinstance(table, nn.EmbeddingBag):
        shape = (table.num_embeddings, table.embedding_dim)
        return GatheredBag(FloatRows(table.weight), shape, table.padding_idx, table.mode)
    return None


def onnx_lookups(model: nn.Module) -> nn.Module:
    """`model` with every bag and quantized table replaced by its `GatheredBag`, under each
    name that holds it (a split twin holds a table twice: in the model's arch and in its side's
    lookups). Modifies `model`: pass a shared copy (export.shared_copy)."""
    forms: dict[int, GatheredBag] = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if id(module) not in forms and (form := gathered(module)) is not None:
            forms[id(module)] = form
        if id(module) in forms:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, forms[id(module)])
    return model
