"""Where a model's graph can be cut: at a layer, into the part before it and the tail after it.

:mod:`explain.inference` runs the part of a model before an explained layer as an optimised graph
and the tail after it eagerly, with autograd. Cutting needs the model as a graph of module calls:
``torch.fx`` traces it, with every module that has no children (and the layers to cut at) kept as
single calls, so a module's own Python (``Conv2dSame``'s padding worked out from the input size)
runs as written. A model that ``torch.fx`` cannot trace (data-dependent control flow) has no cut.

A cut at a layer exists when the layer runs once and everything after it depends on the input
only through the layer's output: a layer inside a residual block, whose input skips past it, has
none (the tail would need the block's input too).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import fx, nn

__all__ = ["CutError", "cut_at", "outputs_at", "trace"]


class CutError(Exception):
    """The model cannot be cut, or traced, as asked."""


class _LeafTracer(fx.Tracer):
    """Keeps modules without children, and the named ``leaves``, as single calls."""

    def __init__(self, leaves: Sequence[str]) -> None:
        super().__init__()
        self._leaves = frozenset(leaves)

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if qualified_name in self._leaves:
            return True
        if isinstance(module, nn.Sequential | nn.ModuleList | nn.ModuleDict):
            return False
        return next(module.children(), None) is None or super().is_leaf_module(
            module, qualified_name
        )


def trace(model: nn.Module, leaves: Sequence[str] = ()) -> fx.GraphModule:
    """``model`` as a ``torch.fx`` graph of module calls (the modules are the model's own objects,
    so their hooks still fire).

    Raises:
        CutError: the model cannot be traced.
    """
    try:
        graph = _LeafTracer(leaves).trace(model)
    except Exception as error:  # control flow on values, unsupported Python
        raise CutError(f"torch.fx cannot trace {type(model).__name__}: {error}") from error
    return fx.GraphModule(model, graph, class_name=f"{type(model).__name__}Graph")


def _layer_node(graph: fx.Graph, layer: str) -> fx.Node:
    nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(nodes) != 1:
        raise CutError(
            f"layer {layer!r} is called {len(nodes)} times in the traced graph, not once"
        )
    return nodes[0]


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(node.all_input_nodes)
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(current.all_input_nodes)
    return seen


def _output_node(graph: fx.Graph) -> fx.Node:
    return next(n for n in graph.nodes if n.op == "output")


def outputs_at(model: nn.Module, layers: Sequence[str]) -> fx.GraphModule:
    """The model as a graph that returns ``(logits, *outputs of layers)``, each output copied as
    the layer returns it (an in-place operation after the layer, ``ReLU(inplace=True)``, does not
    change it: what a capture of the layer keeps).

    Raises:
        CutError: the model cannot be traced, or a layer does not run exactly once.
    """
    traced = trace(model, layers)
    graph = traced.graph
    copies = []
    for layer in layers:
        node = _layer_node(graph, layer)
        with graph.inserting_after(node):
            copies.append(graph.call_method("clone", (node,)))
    output = _output_node(graph)
    (result,) = output.args
    output.args = ((result, *copies),)
    graph.lint()
    return fx.GraphModule(traced, graph, class_name=f"{type(model).__name__}Outputs")


def cut_at(model: nn.Module, layer: str) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``(head, tail)``: ``head(inputs)`` is the output of ``layer``, ``tail(output)`` the model's
    output from there, with ``tail(head(x)) == model(x)``. The tail calls the model's own modules.

    Raises:
        CutError: the model cannot be traced, the layer does not run once, or something after it
            needs more of the input than the layer's output.
    """
    traced = trace(model, [layer])
    graph = traced.graph
    cut = _layer_node(graph, layer)
    before = _ancestors(cut)

    head_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node in before or node is cut:
            env[node] = head_graph.node_copy(node, lambda n: env[n])
    head_graph.output(env[cut])

    tail_graph = fx.Graph()
    tail_env: dict[fx.Node, fx.Node] = {cut: tail_graph.placeholder("activation")}
    for node in graph.nodes:
        if node in before or node is cut:
            continue
        for used in node.all_input_nodes:
            if used not in tail_env:
                if used.op != "get_attr":  # a parameter or buffer is no part of the input
                    raise CutError(
                        f"the model's computation after layer {layer!r} also uses {used.name!r}, "
                        "which comes before it (a skip connection around the layer)"
                    )
                tail_env[used] = tail_graph.node_copy(used)
        tail_env[node] = tail_graph.node_copy(node, lambda n: tail_env[n])
    head_graph.lint()
    tail_graph.lint()
    name = type(model).__name__
    return (
        fx.GraphModule(traced, head_graph, class_name=f"{name}Head"),
        fx.GraphModule(traced, tail_graph, class_name=f"{name}Tail"),
    )
