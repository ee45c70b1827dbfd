"""The quantized twins of the float modules in `recaccel.models`: the same layers with smaller
weights, each built from its float module by `from_float` and saved as plain tensors, so an
artifact rebuilds them without the optimization stage that made them (TorchRec's pattern).

- `embedding`: row-wise INT8/INT4 embedding tables (`QuantizedEmbeddingBag`,
  `quantize_embeddings`);
- `fused`: all single-valued tables of one width looked up in one kernel call;
- `int8`: INT8 dynamic Linear and statically calibrated MLP on FBGEMM;
- `half`: FP16/BF16 MLPs and the device check that says whether they pay;
- `dense`: `quantize_dense`, which applies `int8` or `half` to a model's MLPs.
"""
