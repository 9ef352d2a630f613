"""The optimised inference path: parts of a model as ONNX Runtime graphs, beside the eager model.

A forward pass without gradients (predictions, Score-CAM's masked inputs, the faithfulness
scores' perturbed images) runs the whole model as one ONNX Runtime graph. A CAM needs autograd
only from its layer on, so the part of the model *before* the layer runs as a graph
(:func:`explain.graphs.cut_at`) and the tail after it eagerly: the layer's persistent hooks are
fired with the graph's output (:meth:`~explain.hooks.ModelHooks.fire_output`), so a capture sees
at that layer what the eager model would have given it (differentiable, for
``torch.autograd.grad`` with respect to it). Feature maps of a set of layers come from one graph
with those layers as extra outputs.

Every graph is checked when it is built: its outputs on a random batch, and on batches of other
sizes, must match the eager model's (within :data:`TOLERANCE` of their scale). A model or layer
that cannot be exported, traced or cut, or whose graph does not match, runs eagerly, with one log
line saying why; so does everything when ``onnxruntime`` or ``onnx`` is not installed.

ONNX Runtime keeps one session per thread count: a call runs on as many threads as
``torch.get_num_threads()`` gives *on the calling thread* (a per-thread setting), so whoever
plans torch's threads plans these too. Sessions do not spin while idle, so a batch on another
thread gets the cores.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from explain.graphs import CutError, cut_at, outputs_at
from explain.hooks import ModelHooks
from explain.layers import eval_mode
from explain.machine import available_cores

__all__ = ["TOLERANCE", "LayerSplit", "ModelGraphs", "OutputGraph", "onnxruntime_available"]

log = logging.getLogger("explain.inference")

TOLERANCE = 1e-4
"""Largest difference a graph's output may have from the eager model's, relative to the largest
magnitude of that output (at least 1)."""
_OPSET = 17
_MAX_SPLITS = 8
_MAX_FEATURE_GRAPHS = 4


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` and ``onnx`` can be imported (the optimised path runs graphs with
    the first; torch's exporter needs the second)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


class OutputGraph:
    """One exported graph: an ``(N, 3, H, W)`` batch in, a tuple of tensors out.

    Args:
        onnx: The ONNX model.
        outputs: How many outputs it has.
        cores: Most threads a call may use.
    """

    def __init__(self, onnx: bytes, outputs: int, cores: int) -> None:
        self._onnx = onnx
        self.outputs = outputs
        self._cores = max(1, cores)
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _session(self, threads: int) -> Any:
        session = self._sessions.get(threads)
        if session is not None:
            return session
        import onnxruntime

        with self._lock:
            if threads not in self._sessions:
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                # Idle pool threads sleep instead of spinning: another batch may need the core.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                self._sessions[threads] = onnxruntime.InferenceSession(
                    self._onnx, options, providers=["CPUExecutionProvider"]
                )
            return self._sessions[threads]

    def __call__(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run the graph on as many threads as ``torch.get_num_threads()`` says on this thread."""
        threads = min(self._cores, max(1, torch.get_num_threads()))
        array = inputs.detach().to(torch.float32).contiguous().numpy()
        results = self._session(threads).run(None, {"input": array})
        return [torch.from_numpy(result) for result in results]


@dataclass(frozen=True)
class LayerSplit:
    """A model cut at ``layer``: the graph before it, and the eager tail after it.

    Attributes:
        layer: The layer.
        head: The graph whose single output is the layer's output.
        tail: ``tail(layer output) -> logits``, the model's own modules from the layer on.
    """

    layer: str
    head: OutputGraph
    tail: nn.Module

    def __call__(self, inputs: torch.Tensor, hooks: ModelHooks) -> torch.Tensor:
        """The model's output on ``inputs``, the layer's hooks fired with the head's output (so
        an open capture records it, and may swap in what the tail receives)."""
        (activation,) = self.head(inputs)
        return self.tail(hooks.fire_output(self.layer, activation))


class ModelGraphs:
    """The optimised graphs of one model, built on first use and kept (thread-safe).

    Args:
        model: The model (eval mode; its parameters need no gradients).
        hooks: The model's persistent hooks (the optimised path is used only while no capture
            other than the caller's own is open on them).
        input_size: ``(H, W)`` of the model's inputs.
        name: For log lines.
        cores: Most threads one call may use; default: :func:`explain.machine.available_cores`.
    """

    def __init__(
        self,
        model: nn.Module,
        hooks: ModelHooks,
        input_size: tuple[int, int],
        *,
        name: str = "model",
        cores: int | None = None,
    ) -> None:
        self.model = model
        self.hooks = hooks
        self.input_size = tuple(input_size)
        self.name = name
        self.cores = cores or available_cores()
        self._lock = threading.RLock()
        self._full: OutputGraph | bool | None = False  # False: not built yet
        self._splits: dict[str, LayerSplit | None] = {}
        self._features: dict[tuple[str, ...], OutputGraph | None] = {}
        self._available = onnxruntime_available()
        if not self._available:
            log.info("%s: onnxruntime or onnx is not installed; the model runs eagerly", name)

    # -- what callers use ---------------------------------------------------------------------------

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's output on ``inputs`` without gradients: by the graph where there is one
        and no capture is open on the hooks, else eagerly under ``torch.inference_mode()``."""
        graph = self.full() if not self.hooks.capturing else None
        if graph is None:
            with eval_mode(self.model), torch.inference_mode():
                return self.model(inputs)
        (logits,) = graph(inputs)
        return logits

    def full(self) -> OutputGraph | None:
        """The whole model as a graph, or ``None`` (it runs eagerly)."""
        if self._full is False:
            with self._lock:
                if self._full is False:
                    self._full = self._build("the whole model", lambda: (self.model, 1))
        return self._full or None

    def split(self, layer: str) -> LayerSplit | None:
        """The model cut at ``layer``, or ``None`` (CAMs at that layer run eagerly). At most
        a few layers are kept; beyond them the others run eagerly."""
        if layer not in self._splits:
            with self._lock:
                if layer not in self._splits:
                    if len(self._splits) >= _MAX_SPLITS:
                        return None
                    self._splits[layer] = self._build_split(layer)
        return self._splits[layer]

    def features(self, layers: Sequence[str], *, build: bool = False) -> OutputGraph | None:
        """A graph returning ``(logits, *outputs of layers)``, or ``None`` (eager).

        Args:
            layers: The layers, in the order of the outputs.
            build: Build the graph if it was not built before (a few hundred milliseconds;
                for the layers shown by default, at warm-up). Otherwise only a graph built
                earlier is returned: feature maps of other layers run eagerly.
        """
        key = tuple(layers)
        if key not in self._features and build:
            with self._lock:
                if key not in self._features and len(self._features) < _MAX_FEATURE_GRAPHS:
                    self._features[key] = self._build(
                        f"the feature maps of {', '.join(key)}",
                        lambda: (outputs_at(self.model, key), 1 + len(key)),
                        lambda example: self._captured(example, key),
                    )
        return self._features.get(key)

    # -- building ----------------------------------------------------------------------------------

    def _captured(self, example: torch.Tensor, layers: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
        """The eager model's logits and what a capture keeps of ``layers`` on ``example``."""
        with self.hooks.capture(layers) as capture:
            logits = self.model(example)
            return (logits, *(capture.output(layer) for layer in layers))

    def _example(self, batch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(batch)
        return torch.randn(batch, 3, *self.input_size, generator=generator)

    def _build(
        self,
        what: str,
        make: Callable[[], tuple[nn.Module, int]],
        expect: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
    ) -> OutputGraph | None:
        """Export ``make()``'s module to a graph and check it against ``expect`` (default: the
        module itself) on batches of several sizes."""
        if not self._available:
            return None
        try:
            module, outputs = make()
            graph = OutputGraph(_export(module, self._example(2), outputs), outputs, self.cores)
            for batch in (2, 1, 3):
                example = self._example(batch)
                with eval_mode(self.model), torch.inference_mode():
                    expected = expect(example) if expect else _as_tuple(module(example))
                _check(graph(example), expected, what)
        except (CutError, _MismatchError) as error:
            log.info("%s: %s: eager (%s)", self.name, what, error)
            return None
        except Exception as error:  # the exporter or ONNX Runtime refused the model
            reason = str(error).splitlines()[0] if str(error) else ""
            log.info("%s: %s: eager (%s: %s)", self.name, what, type(error).__name__, reason)
            return None
        log.info("%s: %s: ONNX Runtime graph", self.name, what)
        return graph

    def _build_split(self, layer: str) -> LayerSplit | None:
        what = f"the part before {layer}"
        if not self._available:
            return None
        try:
            head, tail = cut_at(self.model, layer)
        except CutError as error:
            log.info("%s: %s: eager (%s)", self.name, what, error)
            return None
        graph = self._build(what, lambda: (head, 1))
        if graph is None:
            return None
        split = LayerSplit(layer, graph, tail)
        try:  # the tail on the graph's output gives the model's logits
            example = self._example(2)
            with eval_mode(self.model), torch.inference_mode():
                _check((split.tail(graph(example)[0]),), (self.model(example),), "the tail")
        except Exception as error:
            log.info("%s: %s: eager (%s)", self.name, what, error)
            return None
        return split


class _MismatchError(Exception):
    pass


def _as_tuple(value: Any) -> tuple[torch.Tensor, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def _check(got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor], what: str) -> None:
    if len(got) != len(expected):
        raise _MismatchError(f"{what}: {len(got)} outputs where the model gives {len(expected)}")
    for value, reference in zip(got, expected, strict=True):
        if not isinstance(reference, torch.Tensor) or tuple(value.shape) != tuple(reference.shape):
            raise _MismatchError(f"{what}: an output of another shape than the model's")
        scale = max(1.0, float(reference.abs().max()))
        difference = float((value - reference).abs().max())
        if not difference <= TOLERANCE * scale:  # NaN fails too
            raise _MismatchError(
                f"{what}: the graph's output differs from the model's by {difference:.2e}"
            )


def _export(module: nn.Module, example: torch.Tensor, outputs: int) -> bytes:
    """``module`` as ONNX bytes, batch size free, with TorchScript tracing (the exporter of
    torch 2.4 to 2.6 and later; it needs no ``onnx`` package)."""
    names = [f"output{i}" for i in range(outputs)]
    buffer = io.BytesIO()
    arguments: dict[str, Any] = {
        "input_names": ["input"],
        "output_names": names,
        "dynamic_axes": {name: {0: "batch"} for name in ["input", *names]},
        "opset_version": _OPSET,
        "do_constant_folding": True,
    }
    with warnings.catch_warnings(), torch.no_grad(), _mha_fast_path(False):
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: the check decides
        try:
            torch.onnx.export(module, (example,), buffer, dynamo=False, **arguments)
        except TypeError as error:  # torch before 2.5 has no `dynamo` argument
            if "dynamo" not in str(error):
                raise
            torch.onnx.export(module, (example,), buffer, **arguments)
    return buffer.getvalue()


@contextlib.contextmanager
def _mha_fast_path(enabled: bool) -> Iterator[None]:
    """``nn.MultiheadAttention``'s fused inference kernel on or off for the block (its operator
    has no ONNX form; the graph checks then compare against the fused eager model)."""
    backend = getattr(torch.backends, "mha", None)
    if backend is None:
        yield
        return
    before = backend.get_fastpath_enabled()
    backend.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        backend.set_fastpath_enabled(before)
