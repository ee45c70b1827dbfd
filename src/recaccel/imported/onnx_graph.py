"""An imported ONNX model: run by ONNX Runtime, and bound into recaccel's graph contract.

Two forms of the same model:

- `OnnxGraph`, an `nn.Module` whose forward runs the user's graph in ONNX Runtime, so that
  evaluation and distillation (a teacher's scores) take it as any model. Under `BoundModel`
  (adapter.py) it is what PyTorch-side code calls.
- `bind_onnx`, the user's graph with recaccel's three inputs and its `score` output added
  around it: the form ONNX Runtime, OpenVINO and Triton serve, with the binding done inside
  the graph (Gather, Reshape, Cast), so no Python runs per request. The export check compares
  the two forms on the same rows, which checks the binding graph against the PyTorch adapter.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from recaccel.data.schema import INPUT_NAMES, OUTPUT_NAME, FeatureKind, FeatureSchema
from recaccel.errors import ConfigError
from recaccel.imported.adapter import PROBABILITY_EPS
from recaccel.imported.binding import ModelBinding, OutputKind, checked_input

OWN = "recaccel/"  # the names of the nodes and tensors recaccel adds
PREFIX = "model/"  # a user tensor named as one of recaccel's inputs or outputs is renamed so
# Reshape with a shape input (5), Cast (6), broadcasting Max/Min (8).
MIN_OPSET = 8
_DTYPES: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.DOUBLE: "float64",
    TensorProto.INT64: "int64",
    TensorProto.INT32: "int32",
}
# The graph input each kind of feature is gathered from.
_SOURCES = dict(
    zip(
        (FeatureKind.DENSE, FeatureKind.CATEGORICAL, FeatureKind.MULTI_HOT),
        INPUT_NAMES,
        strict=True,
    )
)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph's real inputs (IR < 4 also lists initializers as inputs)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _shape(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def default_opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def check_graph(
    model: onnx.ModelProto, schema: FeatureSchema, binding: ModelBinding
) -> ModelBinding:
    """Check the graph's inputs and output against the binding; return the binding with each
    input's dtype taken from the graph.

    Raises:
        ConfigError: an input the graph lacks or the binding leaves unbound, a dtype the
            features cannot take, a rank or width that differs, more than one output, an opset
            below `MIN_OPSET`.
    """
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise ConfigError(
            f"the ONNX model uses opset {opset}", f"re-export it with opset {MIN_OPSET} or later"
        )
    inputs = {i.name: i for i in graph_inputs(model)}
    if len(model.graph.output) != 1:
        raise ConfigError(
            f"the ONNX model has {len(model.graph.output)} outputs "
            f"({', '.join(o.name for o in model.graph.output)})",
            "a ranking model returns one score per row: export it with that output alone",
        )
    bound = []
    for b in binding.inputs:
        if b.name not in inputs:
            raise ConfigError(
                f"the ONNX model has no input named {b.name!r}",
                f"its inputs are ({', '.join(inputs)}): name each [[model.inputs]] after one",
            )
        value = inputs[b.name]
        dtype = _DTYPES.get(int(value.type.tensor_type.elem_type), "")
        bound.append(checked_input(b, dtype, _shape(value), schema, "ONNX"))
    unbound = [name for name in inputs if name not in {b.name for b in binding.inputs}]
    if unbound:
        raise ConfigError(
            f"the ONNX model's input(s) {', '.join(map(repr, unbound))} take no features",
            "add a [[model.inputs]] entry for each, with the features it takes",
        )
    return ModelBinding(tuple(bound), binding.output)


class OnnxGraph(nn.Module):
    """The user's graph as a module: forward runs it in ONNX Runtime (CPU, one thread).

    Takes the graph's inputs positionally, in the graph's order; returns its output as a
    tensor. The session is made on first use and not copied or pickled with the module.
    """

    graph: torch.Tensor

    def __init__(self, model_bytes: bytes) -> None:
        super().__init__()
        # The serialized graph as a buffer (not saved: the artifact keeps the file), so the
        # artifact's resident size counts it as it counts any model's tensors.
        data = torch.frombuffer(bytearray(model_bytes), dtype=torch.uint8)
        self.register_buffer("graph", data, persistent=False)
        proto = onnx.load_from_string(model_bytes)
        self.input_names = [i.name for i in graph_inputs(proto)]
        self.output_name = proto.graph.output[0].name
        # Its initializers (a few index constants among the weights), for the parameter count.
        self.weight_count = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
        self._session: Any = None

    def held_weight_count(self) -> int:
        return self.weight_count

    @property
    def model_bytes(self) -> bytes:
        """The serialized ONNX graph."""
        return self.graph.numpy().tobytes()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self._session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = 1
            self._session = ort.InferenceSession(self.model_bytes, sess_options=options)
        feeds = {
            name: x.detach().cpu().numpy() for name, x in zip(self.input_names, inputs, strict=True)
        }
        return torch.from_numpy(np.asarray(self._session.run([self.output_name], feeds)[0]))

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxGraph:
        return OnnxGraph(self.model_bytes)

    def __getstate__(self) -> dict[str, Any]:
        state = copy.copy(self.__dict__)
        state["_session"] = None
        return state


def _constant(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name=name)


def bind_onnx(
    model: onnx.ModelProto, schema: FeatureSchema, binding: ModelBinding, order: Sequence[int]
) -> onnx.ModelProto:
    """The user's graph with recaccel's inputs (dense, categorical, multi_hot) and output
    (score: (batch,) float32 logits), the binding done by nodes in front of it.

    Args:
        model: the user's graph, checked by `check_graph`.
        binding: as `check_graph` returned it (dtypes from the graph).
        order: `binding.inputs` indices in the graph's input order.
    """
    inner = copy.deepcopy(model)
    names = _names(inner.graph)
    if any(n.startswith(OWN) for n in names):
        raise ConfigError(
            f"the ONNX model has tensor names starting with {OWN!r}, which recaccel's own use",
            "rename them in the exporter, or export with other names",
        )
    # A user tensor named as one of recaccel's inputs or its output is renamed out of the way.
    for name in (*INPUT_NAMES, OUTPUT_NAME):
        if name in names:
            _rename(inner.graph, name, PREFIX + name)
    renamed = {n: PREFIX + n if n in (*INPUT_NAMES, OUTPUT_NAME) else n for n in names}
    nodes: list[onnx.NodeProto] = []
    constants: list[TensorProto] = []
    for i in order:
        b = binding.inputs[i]
        source = _SOURCES[b.kind]
        at = f"{OWN}{b.name}"
        constants.append(_constant(f"{at}/columns", np.array(b.columns, dtype=np.int64)))
        x = f"{at}/gathered"
        nodes.append(helper.make_node("Gather", [source, f"{at}/columns"], [x], axis=1))
        if b.kind is FeatureKind.MULTI_HOT:
            bag = b.bag_len(schema)
            constants.append(_constant(f"{at}/bag", np.arange(bag, dtype=np.int64)))
            nodes.append(helper.make_node("Gather", [x, f"{at}/bag"], [f"{at}/cut"], axis=2))
            x = f"{at}/cut"
        if b.squeeze:
            shape = [-1, b.bag_len(schema)] if b.kind is FeatureKind.MULTI_HOT else [-1]
            constants.append(_constant(f"{at}/shape", np.array(shape, dtype=np.int64)))
            nodes.append(helper.make_node("Reshape", [x, f"{at}/shape"], [f"{at}/squeezed"]))
            x = f"{at}/squeezed"
        to = (
            helper.np_dtype_to_tensor_dtype(np.dtype(b.dtype))
            if b.dtype != "bfloat16"
            else (TensorProto.BFLOAT16)
        )
        nodes.append(helper.make_node("Cast", [x], [renamed[b.name]], to=to))

    out = renamed[model.graph.output[0].name]
    constants.append(_constant(OWN + "flat", np.array([-1], dtype=np.int64)))
    back = []  # the nodes that read the user's output, after its graph
    back.append(helper.make_node("Reshape", [out, OWN + "flat"], [OWN + "flat_score"]))
    final = OUTPUT_NAME if binding.output is OutputKind.LOGIT else OWN + "probability"
    back.append(helper.make_node("Cast", [OWN + "flat_score"], [final], to=TensorProto.FLOAT))
    if binding.output is OutputKind.PROBABILITY:
        low, high = np.float32(PROBABILITY_EPS), np.float32(1 - PROBABILITY_EPS)
        constants += [
            _constant(OWN + "low", np.array(low)),
            _constant(OWN + "high", np.array(high)),
            _constant(OWN + "one", np.array(np.float32(1))),
        ]
        back += [
            helper.make_node("Max", [final, OWN + "low"], [OWN + "p_low"]),
            helper.make_node("Min", [OWN + "p_low", OWN + "high"], [OWN + "p"]),
            helper.make_node("Sub", [OWN + "one", OWN + "p"], [OWN + "q"]),
            helper.make_node("Div", [OWN + "p", OWN + "q"], [OWN + "odds"]),
            helper.make_node("Log", [OWN + "odds"], [OUTPUT_NAME]),
        ]

    n_mh = len(schema.multi_hot)
    new_inputs = [
        helper.make_tensor_value_info(
            INPUT_NAMES[0], TensorProto.FLOAT, ["batch", len(schema.dense)]
        ),
        helper.make_tensor_value_info(
            INPUT_NAMES[1], TensorProto.INT64, ["batch", len(schema.categorical)]
        ),
        helper.make_tensor_value_info(
            INPUT_NAMES[2], TensorProto.INT64, ["batch", n_mh, schema.multi_hot_len]
        ),
    ]
    graph = inner.graph
    initializers = {t.name for t in graph.initializer}
    kept_inputs = [i for i in graph.input if i.name in initializers]  # IR < 4 lists them
    del graph.input[:]
    graph.input.extend(new_inputs + kept_inputs)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch"]))
    graph.initializer.extend(constants)
    user_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *user_nodes, *back])
    onnx.checker.check_model(inner)
    return inner


def _names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name in `graph` and its subgraphs."""
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        names |= set(node.input) | set(node.output)
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs]:
                names |= _names(sub)
    names.discard("")
    return names


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor `old` everywhere in `graph`, subgraphs included (ONNX names are unique
    across a graph and its subgraphs, which read outer tensors by name)."""
    values: list[onnx.ValueInfoProto | TensorProto] = [
        *graph.input,
        *graph.output,
        *graph.value_info,
        *graph.initializer,
    ]
    for value in values:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs]:
                _rename(sub, old, new)
