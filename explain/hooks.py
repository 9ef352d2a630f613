"""Persistent, inert hooks on a model's named layers, and per-call captures.

The classic hook pattern appends every output to a global list (``fmap_block.append(output)``): the
list grows with every call, keeps tensors alive, and mixes up callers that share the model. Here the
hooks are attached once and do nothing unless a :class:`Capture` is open *in the current context*
(a :mod:`contextvars` variable, so threads and asyncio tasks each see only their own capture).
A capture keeps what it recorded until it closes, then drops it.

Example:
    >>> hooks = ModelHooks(model)                       # once, for the model's lifetime
    >>> with torch.no_grad(), hooks.capture(["layer4"], grad=["layer4"]) as capture:
    ...     logits = model(images)
    ...     activation = capture.output("layer4")       # differentiable, shape (N, C, h, w)
    >>> (grads,) = torch.autograd.grad(logits[:, 3].sum(), activation)
    >>> hooks.close()                                   # or use ModelHooks as a context manager
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from explain.errors import AmbiguousLayerError, UnknownLayerError

__all__ = ["BackwardHook", "Capture", "ModelHooks", "find_layer"]

# The captures open in the current thread or task, innermost last. A tuple, never mutated.
_ACTIVE: contextvars.ContextVar[tuple[Capture, ...]] = contextvars.ContextVar(
    "explain_active_captures", default=()
)

BackwardHook = Callable[[nn.Module, torch.Tensor], torch.Tensor | None]
"""``hook(module, grad_output) -> replacement gradient or None``."""


def find_layer(model: nn.Module, name: str, *, choices: Iterable[str] | None = None) -> nn.Module:
    """Look a submodule up by its dotted name (``"layer4.1.conv2"``, ``"features.0"``).

    Args:
        model: The model to search.
        name: Dotted module name as printed by ``model.named_modules()``.
        choices: Names to accept and to suggest from; defaults to every named submodule.

    Raises:
        UnknownLayerError: ``name`` is not a submodule (the message lists close matches).
    """
    modules = dict(model.named_modules())
    valid = set(choices) if choices is not None else set(modules) - {""}
    if name not in valid or name not in modules:
        raise UnknownLayerError(name, valid)
    return modules[name]


class ModelHooks:
    """Forward and forward-pre hooks attached once to named layers of a model.

    The hooks are inert: they return immediately unless a capture of this ``ModelHooks`` is open
    in the calling context. A layer first named in a capture (or :meth:`layer`) gets its hooks
    then, once; hooks on every module would slow every forward pass, so only the layers in use
    carry them. The handles are kept until :meth:`close` (idempotent), which also runs when the
    object is used as a context manager, including after an exception.

    Args:
        model: The model to hook. It is not modified otherwise (no mode or parameter changes).
        layers: Dotted names of the layers to hook now; default: every named submodule.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str] | None = None) -> None:
        self.model = model
        self._modules = {name: module for name, module in model.named_modules() if name}
        self._layers: dict[str, nn.Module] = {}
        self._backward_hooks: dict[str, OrderedDict[int, BackwardHook]] = {}
        self._handles: list[RemovableHandle] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            for name in self._modules if layers is None else layers:
                self.layer(name)
        except BaseException:
            self.close()
            raise

    # -- lifetime ---------------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """Whether the hooks are usable (not closed)."""
        return not self._closed

    @property
    def layer_names(self) -> list[str]:
        """The layers that carry hooks, in the order they were attached."""
        return list(self._layers)

    def close(self) -> None:
        """Remove every hook from the model. Safe to call more than once."""
        with self._lock:
            self._closed = True
            handles, self._handles = self._handles, []
            self._layers.clear()
            self._backward_hooks.clear()
        for handle in handles:
            handle.remove()

    def __enter__(self) -> ModelHooks:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- lookup -----------------------------------------------------------------------------------

    def layer(self, name: str) -> nn.Module:
        """The module called ``name``, with this object's hooks attached to it (once).

        Raises:
            UnknownLayerError: the model has no such submodule (close matches are listed).
            RuntimeError: the hooks were closed.
        """
        module = self._layers.get(name)
        if module is not None:
            return module
        module = self._modules.get(name)
        if module is None:
            raise UnknownLayerError(name, self._modules)
        with self._lock:
            if self._closed:
                raise RuntimeError("these hooks were closed; create a new ModelHooks")
            if name not in self._layers:
                self._handles.append(
                    module.register_forward_pre_hook(functools.partial(self._on_forward_pre, name))
                )
                self._handles.append(
                    module.register_forward_hook(functools.partial(self._on_forward, name))
                )
                self._layers[name] = module
        return module

    # -- captures ---------------------------------------------------------------------------------

    def capture(
        self,
        outputs: Iterable[str] | str = (),
        *,
        inputs: Iterable[str] | str = (),
        grad: Iterable[str] | str = (),
        trace: bool = False,
        modify_grad: Mapping[str, BackwardHook] | None = None,
    ) -> Capture:
        """Open a capture for the current thread or task; use it as a context manager.

        Args:
            outputs: Layers whose outputs to keep (detached copies, taken before any in-place
                operation downstream can change them).
            inputs: Layers whose positional inputs to keep (detached copies).
            grad: Layers whose outputs to keep *differentiable*, for ``torch.autograd.grad`` or
                ``Tensor.register_hook``. If the forward runs with gradients disabled (the cheap
                way), gradient mode is switched on from the first such layer for the rest of the
                capture, so autograd records only the part of the model downstream of it; the
                previous mode is restored when the capture closes. The model receives a copy of
                the output, so downstream in-place operations cannot alter the captured tensor.
            trace: Also record, for every hooked layer, how often it ran and its output shape
                (metadata only, no tensors).
            modify_grad: Layer name to ``hook(module, grad_output) -> replacement or None``: a
                per-call gradient modifier. In every forward pass run inside this capture, each
                output of the layer that requires gradients gets ``hook`` as a tensor hook, so the
                gradient flowing back through it is replaced. Unlike a capture of outputs it applies
                to every run of a module that runs several times per pass (a shared activation),
                and it works when the module runs in place (``ReLU(inplace=True)``). Forward passes
                outside this capture (other threads and tasks, or later calls) are not touched; the
                tensor hooks live and die with this call's autograd graph.

        Raises:
            UnknownLayerError: a requested layer is not a submodule of the model.
            RuntimeError: the hooks were closed.
        """
        if not self.attached:
            raise RuntimeError("these hooks were closed; create a new ModelHooks")
        outputs, inputs, grad = (_names(x) for x in (outputs, inputs, grad))
        modifiers = dict(modify_grad or {})
        for name in (*outputs, *inputs, *grad, *modifiers):
            self.layer(name)
        return Capture(
            self, outputs=outputs, inputs=inputs, grad=grad, trace=trace, modify_grad=modifiers
        )

    def add_backward_hook(self, layer: str, hook: BackwardHook) -> RemovableHandle:
        """Call ``hook(module, grad_output)`` when a gradient reaches ``layer``'s output.

        Like ``Module.register_full_backward_hook`` restricted to the output gradient, the hook
        may return a tensor that replaces the gradient flowing further back. Unlike it, the hook
        is attached as a tensor hook on the layer's output at forward time, only while a capture
        is open, so it works when an in-place operation (``ReLU(inplace=True)``) follows the layer;
        PyTorch's module backward hooks fail there (pytorch/pytorch#61519). It fires only for
        forward passes run inside a capture, when the output requires gradients (layers named
        in ``capture(grad=...)`` always do).

        Returns:
            A handle whose ``remove()`` detaches the hook; :meth:`close` detaches it too.
        """
        self.layer(layer)
        # An OrderedDict, not a dict: RemovableHandle keeps a weak reference to it.
        hooks = self._backward_hooks.setdefault(layer, OrderedDict())
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    @property
    def capturing(self) -> int:
        """How many captures of these hooks are open in the current thread or task."""
        return sum(1 for _ in self._captures())

    def fire_output(self, layer: str, output: torch.Tensor) -> torch.Tensor:
        """Run ``layer``'s forward hooks on ``output`` as if the layer had just returned it, and
        return what the rest of the model must receive (a capture of it for gradients swaps in a
        copy, see :meth:`capture`).

        For a caller that computed the layer's output another way, e.g. by an optimised graph of
        the model up to it (:mod:`explain.inference`): open captures see at ``layer`` exactly
        what the eager model would have given them. Captures of the layer's *inputs* cannot be
        served this way and are refused.

        Raises:
            ValueError: an open capture asks for the inputs of ``layer``.
        """
        module = self.layer(layer)
        for capture in self._captures():
            if layer in capture._input_layers:
                raise ValueError(
                    f"a capture asks for the inputs of {layer!r}; run the eager model instead"
                )
        replaced = self._on_forward(layer, module, (), output)
        return output if replaced is None else replaced

    # -- the hooks themselves ---------------------------------------------------------------------

    def _captures(self) -> Iterator[Capture]:
        for capture in _ACTIVE.get():
            if capture.owner is self:
                yield capture

    def _on_forward_pre(self, name: str, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not _ACTIVE.get():
            return
        for capture in self._captures():
            capture._record_input(name, args)

    def _on_forward(self, name: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if not _ACTIVE.get():
            return None
        replaced = None
        for capture in self._captures():
            capture._modify_gradient(name, module, output)
            kept, replacement = capture._record_output(name, output)
            if replacement is not None:
                output = replaced = replacement
            hooks = self._backward_hooks.get(name)
            if hooks and isinstance(kept, torch.Tensor) and kept.requires_grad:
                for hook in list(hooks.values()):
                    kept.register_hook(functools.partial(hook, module))
        return replaced


class Capture:
    """What hooked layers produced during the forward passes run while it was open.

    Created by :meth:`ModelHooks.capture`; usable once, as a context manager. Everything it holds is
    released when it closes, and reading from it afterwards raises ``RuntimeError``.
    """

    def __init__(
        self,
        owner: ModelHooks,
        *,
        outputs: tuple[str, ...],
        inputs: tuple[str, ...],
        grad: tuple[str, ...],
        trace: bool,
        modify_grad: Mapping[str, BackwardHook] | None = None,
    ) -> None:
        self.owner = owner
        self._modifiers = dict(modify_grad or {})
        self._modified: list[Any] = []
        self._grad_layers = frozenset(grad)
        self._output_layers = frozenset(outputs) | self._grad_layers
        self._input_layers = frozenset(inputs)
        self._trace = trace
        self._outputs: dict[str, Any] = {}
        self._inputs: dict[str, tuple[Any, ...]] = {}
        self._calls: Counter[str] = Counter()
        self._shapes: dict[str, tuple[int, ...] | None] = {}
        self._ambiguous: set[str] = set()
        self._token: contextvars.Token[tuple[Capture, ...]] | None = None
        self._grad_mode_on_enter = False
        self._state = "new"

    # -- context management -----------------------------------------------------------------------

    def __enter__(self) -> Capture:
        if self._state != "new":
            raise RuntimeError("a capture can be opened only once")
        self._state = "open"
        self._grad_mode_on_enter = torch.is_grad_enabled()
        self._token = _ACTIVE.set((*_ACTIVE.get(), self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None  # set in __enter__; not argument validation
        _ACTIVE.reset(self._token)
        self._token = None
        torch.set_grad_enabled(self._grad_mode_on_enter)
        self._outputs.clear()
        self._inputs.clear()
        self._modified.clear()
        self._state = "closed"

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    # -- reading ----------------------------------------------------------------------------------

    def output(self, layer: str) -> torch.Tensor:
        """The output of ``layer`` in the forward pass run inside this capture.

        Raises:
            AmbiguousLayerError: the layer ran more than once (a shared module).
            KeyError: the layer was not requested, or did not run.
            TypeError: the layer's output is not a tensor.
        """
        value = self._read(layer, self._output_layers, self._outputs, "outputs")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"layer {layer!r} returned {type(value).__name__}, not a tensor")
        return value

    def input(self, layer: str) -> tuple[Any, ...]:
        """The positional inputs ``layer`` received (tensors detached and copied)."""
        return self._read(layer, self._input_layers, self._inputs, "inputs")

    @property
    def calls(self) -> Mapping[str, int]:
        """How often each hooked layer ran (every layer with ``trace=True``, else the requested)."""
        return dict(self._calls)

    @property
    def modified_nodes(self) -> list[Any]:
        """The autograd nodes (``grad_fn``) of the outputs whose gradients ``modify_grad`` replaces,
        one per run of a modified layer, in the order they ran."""
        if self._state != "open":
            raise RuntimeError("read captured tensors inside the `with` block that opened it")
        return list(self._modified)

    @property
    def shapes(self) -> Mapping[str, tuple[int, ...] | None]:
        """With ``trace=True``: each layer's output shape (``None`` for non-tensor outputs)."""
        return dict(self._shapes)

    def _read(self, layer: str, wanted: frozenset[str], store: dict[str, Any], what: str) -> Any:
        if self._state != "open":
            raise RuntimeError("read captured tensors inside the `with` block that opened it")
        if layer in self._ambiguous:
            raise AmbiguousLayerError(
                f"layer {layer!r} ran {self._calls[layer]} times in one capture (a shared "
                "module); its output is not one map. Pick a module that runs once."
            )
        if layer not in wanted:
            raise KeyError(f"layer {layer!r} was not requested in capture({what}=...)")
        if layer not in store:
            raise KeyError(f"layer {layer!r} did not run during this capture")
        return store[layer]

    # -- recording (called by the hooks) ----------------------------------------------------------

    def _count(self, name: str) -> int:
        self._calls[name] += 1
        count = self._calls[name]
        if count > 1:
            self._ambiguous.add(name)
            self._outputs.pop(name, None)
            self._inputs.pop(name, None)
        return count

    def _modify_gradient(self, name: str, module: nn.Module, output: Any) -> None:
        modifier = self._modifiers.get(name)
        if modifier is None or not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        # A tensor hook, not a module backward hook: it sees the gradient of this very output,
        # also when the module ran in place (pytorch/pytorch#61519) or runs again later in the pass.
        output.register_hook(functools.partial(modifier, module))
        self._modified.append(output.grad_fn)

    def _record_input(self, name: str, args: tuple[Any, ...]) -> None:
        if name not in self._input_layers:
            return
        # The output hook counts calls; an input is recorded before its layer's count moves.
        if self._calls[name] == 0:
            self._inputs[name] = tuple(_detached_copy(arg) for arg in args)

    def _record_output(self, name: str, output: Any) -> tuple[Any, Any]:
        """Record one layer output; returns ``(kept tensor, replacement for the model or None)``."""
        if self._trace:
            self._shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else None
        elif name not in self._output_layers and name not in self._input_layers:
            return output, None
        if self._count(name) > 1 or name not in self._output_layers:
            return output, None
        if not isinstance(output, torch.Tensor):
            self._outputs[name] = output
            return output, None
        if name not in self._grad_layers:
            self._outputs[name] = output.detach().clone()
            return output, None
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                f"capture(grad=[{name!r}]) cannot work under torch.inference_mode(); "
                "run the forward under torch.no_grad() instead"
            )
        if not output.requires_grad:
            torch.set_grad_enabled(True)
            output = output.detach().requires_grad_()
        self._outputs[name] = output
        return output, output.clone()


def _names(layers: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(layers, str):
        return (layers,)
    return tuple(dict.fromkeys(layers))


def _detached_copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return value
