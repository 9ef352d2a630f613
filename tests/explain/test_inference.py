"""The optimised inference path: equal to the eager model for every family that uses it, the
hooks' semantics unchanged, and a clean fall back to the eager model where no graph fits."""

from __future__ import annotations

import logging
import threading

import pytest
import torch
from torch import nn

from explain.graphs import CutError, cut_at
from explain.hooks import ModelHooks
from explain.inference import ModelGraphs, onnxruntime_available
from explain.methods import get_method
from explain.models import load_model
from explain.tasks import CAMTask, FeatureMapTask, PredictTask, TaskRunner

pytestmark = pytest.mark.skipif(not onnxruntime_available(), reason="needs onnxruntime")

# One registered model per family of explain.models.zoo (the smallest of each), with
# efficientnet_lite0 on its real weights. Every family uses the optimised path for /predict,
# for CAMs at its default layer and for its default feature maps, except where noted.
FAMILIES = {
    "efficientnet_lite0": "efficientnet_lite0",
    "alexnet": "alexnet:none",
    "vgg": "vgg11:none",
    "resnet": "resnet18:none",
    "resnext": "resnext50_32x4d:none",
    "wide_resnet": "wide_resnet50_2:none",
    "densenet": "densenet121:none",
    "mobilenet": "mobilenet_v3_small:none",
    "efficientnet": "efficientnet_b0:none",
    "convnext": "convnext_tiny:none",
    "squeezenet": "squeezenet1_0:none",
    "mnasnet": "mnasnet0_5:none",
    "regnet": "regnet_y_400mf:none",
    "shufflenet": "shufflenet_v2_x0_5:none",
    "googlenet": "googlenet:none",
    "inception": "inception_v3:none",
    "maxvit": "maxvit_t:none",
    "vit": "vit_b_16:none",
    "swin": "swin_t:none",
}
NO_SPLIT = {
    # The default layer (the last block's ln_1) sits inside a residual block: the block's input
    # skips past it to the block's sum, so the tail needs more than the layer's output. Its CAMs
    # run eagerly (the whole-model and feature-map graphs are used).
    "vit",
}
SCORES = 1e-4
MAPS = 1e-3


def outputs(runner: TaskRunner, task, inputs: torch.Tensor, targets) -> list:
    return runner(task, inputs, targets)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_gives_the_eager_results(family):
    loaded = load_model(FAMILIES[family])
    try:
        fast, eager = TaskRunner(loaded), TaskRunner(loaded, optimize=False)
        assert fast.graphs is not None and eager.graphs is None
        assert fast.graphs.full() is not None, "no whole-model graph"
        assert (fast.graphs.split(loaded.target_layer) is None) == (family in NO_SPLIT)
        assert fast.graphs.features(loaded.feature_layers, build=True) is not None

        torch.manual_seed(0)
        inputs = torch.randn(2, 3, *loaded.preprocess.input_size)
        targets = [[1, 7], None]
        predicted = outputs(fast, PredictTask(), inputs, [None, None])
        reference = outputs(eager, PredictTask(), inputs, [None, None])
        for ours, theirs in zip(predicted, reference, strict=True):
            assert (ours.probabilities - theirs.probabilities).abs().max() <= SCORES

        task = CAMTask("gradcam", loaded.target_layer)
        cams = outputs(fast, task, inputs, targets)
        reference = outputs(eager, task, inputs, targets)
        for ours, theirs in zip(cams, reference, strict=True):
            assert ours.targets == theirs.targets
            assert (ours.probabilities - theirs.probabilities).abs().max() <= SCORES
            assert (ours.cams - theirs.cams).abs().max() <= MAPS
            assert (ours.heatmaps - theirs.heatmaps).abs().max() <= MAPS

        task = FeatureMapTask(tuple(loaded.feature_layers))
        maps = outputs(fast, task, inputs, [None, None])
        reference = outputs(eager, task, inputs, [None, None])
        for ours, theirs in zip(maps, reference, strict=True):
            for layer, value in theirs.feature_maps.items():
                scale = max(1.0, float(value.abs().max()))
                assert (ours.feature_maps[layer] - value).abs().max() <= MAPS * scale, layer
    finally:
        loaded.close()


@pytest.fixture(scope="module")
def lite0():
    loaded = load_model("efficientnet_lite0")
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def graphs(lite0):
    return ModelGraphs(lite0.model, lite0.hooks, lite0.preprocess.input_size, name="lite0")


@pytest.mark.parametrize("method", ["gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"])
def test_every_layer_method_gives_the_eager_maps(method, lite0, graphs):
    torch.manual_seed(1)
    inputs = torch.randn(2, 3, 224, 224)
    fast = get_method(method)(lite0.hooks, lite0.target_layer, graphs=graphs)
    eager = get_method(method)(lite0.hooks, lite0.target_layer)
    assert fast.split() is not None
    ours, theirs = fast(inputs, [[3, 9], 4]), eager(inputs, [[3, 9], 4])
    for a, b in zip(ours.maps, theirs.maps, strict=True):
        peak = max(float(b.abs().max()), 1e-12)
        assert (a - b).abs().max() / peak <= MAPS


@pytest.mark.parametrize(
    ("layer", "cut"),
    [
        ("_blocks.10", True),  # a block's output: what follows reads only it
        ("_blocks.10._bn0", False),  # inside a residual block: the block's input skips past it
    ],
)
def test_cams_at_other_layers_give_the_eager_maps(layer, cut, lite0, graphs):
    torch.manual_seed(3)
    inputs = torch.randn(2, 3, 224, 224)
    fast = get_method("gradcam")(lite0.hooks, layer, graphs=graphs)
    eager = get_method("gradcam")(lite0.hooks, layer)
    assert (fast.split() is not None) == cut
    ours, theirs = fast(inputs, [[3, 9], 4]), eager(inputs, [[3, 9], 4])
    assert (ours.logits - theirs.logits).abs().max() <= SCORES
    for a, b in zip(ours.maps, theirs.maps, strict=True):
        peak = max(float(b.abs().max()), 1e-12)
        assert (a - b).abs().max() / peak <= MAPS


def test_scorecam_and_faithfulness_use_the_whole_model_graph(lite0):
    runner = TaskRunner(lite0, {"scorecam": {"max_channels": 8}})
    eager = TaskRunner(lite0, {"scorecam": {"max_channels": 8}}, optimize=False)
    torch.manual_seed(2)
    inputs = torch.randn(1, 3, 224, 224)
    for task in (CAMTask("scorecam", "_head_act"), CAMTask("gradcam", "_head_act", True)):
        ours, theirs = runner(task, inputs, [[5]])[0], eager(task, inputs, [[5]])[0]
        assert (ours.cams - theirs.cams).abs().max() <= MAPS
        for a, b in zip(ours.faithfulness or [], theirs.faithfulness or [], strict=True):
            assert abs(a.deletion_auc - b.deletion_auc) <= SCORES
            assert abs(a.insertion_auc - b.insertion_auc) <= SCORES
            assert abs(a.confidence_change - b.confidence_change) <= SCORES


def test_the_captured_activation_is_differentiable_and_nothing_gets_a_gradient(lite0, graphs):
    split = graphs.split("_head_act")
    assert split is not None
    inputs = torch.randn(1, 3, 224, 224)
    with torch.no_grad(), lite0.hooks.capture("_head_act", grad="_head_act") as capture:
        logits = split(inputs, lite0.hooks)
        activation = capture.output("_head_act")
        assert activation.requires_grad and logits.requires_grad
    (grads,) = torch.autograd.grad(logits[0, 3], activation)
    assert grads.shape == activation.shape and grads.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in lite0.model.parameters())
    with torch.no_grad(), lite0.hooks.capture("_head_act", grad="_head_act") as capture:
        expected = lite0.model(inputs)
        eager_activation = capture.output("_head_act")
    assert (activation - eager_activation).abs().max() <= 1e-4
    assert (logits - expected).abs().max() <= 1e-4


def test_an_outer_capture_sees_every_layer_because_the_eager_model_runs(lite0, graphs):
    method = get_method("gradcam")(lite0.hooks, "_head_act", graphs=graphs)
    inputs = torch.randn(1, 3, 224, 224)
    with lite0.hooks.capture(["_blocks.0"]) as outer:
        assert method.split() is None
        method(inputs)
        assert outer.output("_blocks.0").shape == (1, 16, 112, 112)
    assert method.split() is not None  # and with no capture open, the graph runs again


def test_the_tail_calls_the_models_own_modules(lite0, graphs):
    split = graphs.split("_head_act")
    assert split is not None
    assert split.tail.get_submodule("_fc") is lite0.model.get_submodule("_fc")


def test_fire_output_refuses_captures_of_the_layers_inputs(lite0):
    with lite0.hooks.capture(inputs=["_head_act"]), pytest.raises(ValueError, match="inputs"):
        lite0.hooks.fire_output("_head_act", torch.zeros(1, 1280, 7, 7))


def test_graphs_run_on_the_calling_threads_torch_threads(lite0, graphs):
    graph = graphs.full()
    assert graph is not None
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            graph(torch.zeros(1, 3, 224, 224))
            assert threads in graph._sessions
            assert graph._sessions[threads].get_session_options().intra_op_num_threads == threads
    finally:
        torch.set_num_threads(before)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.inner = nn.Conv2d(3, 3, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = y + self.inner(y)  # `conv`'s output skips past `inner`
        return self.fc(self.pool(y).flatten(1))


class BatchBaked(nn.Module):
    """Exports wrongly: the batch size becomes a constant of the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3)) * int(x.shape[0])


class Branching(nn.Module):
    """Control flow on values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.sum() > 0:
            y = -y
        return self.fc(y.mean(dim=(2, 3)))


def test_a_layer_with_a_skip_connection_around_it_has_no_cut():
    model = Residual().eval()
    with pytest.raises(CutError, match="skip connection"):
        cut_at(model, "inner")
    head, tail = cut_at(model, "conv")  # the block's input is the layer's output: fine
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(tail(head(x)), model(x))


def test_a_graph_that_differs_from_the_model_is_refused_with_a_log_line(caplog):
    model = BatchBaked().eval()
    with ModelHooks(model, layers=[]) as hooks:
        graphs = ModelGraphs(model, hooks, (8, 8), name="baked")
        with caplog.at_level(logging.INFO, logger="explain.inference"):
            assert graphs.full() is None
        assert "baked: the whole model: eager (" in caplog.text and "differs" in caplog.text
        x = torch.randn(3, 3, 8, 8)
        with torch.no_grad():
            assert torch.equal(graphs.forward(x), model(x))  # eagerly


def test_a_model_torch_fx_cannot_trace_runs_cams_eagerly(caplog):
    model = Branching().eval()
    with ModelHooks(model) as hooks:
        graphs = ModelGraphs(model, hooks, (8, 8), name="branching")
        with caplog.at_level(logging.INFO, logger="explain.inference"):
            assert graphs.split("conv") is None
        assert "torch.fx cannot trace" in caplog.text
        method = get_method("gradcam")(hooks, "conv", graphs=graphs)
        reference = get_method("gradcam")(hooks, "conv")
        x = torch.randn(2, 3, 8, 8)
        assert torch.equal(method(x, 1).maps[0], reference(x, 1).maps[0])


def test_without_onnxruntime_everything_runs_eagerly(monkeypatch, caplog, small_cnn):
    monkeypatch.setattr("explain.inference.onnxruntime_available", lambda: False)
    with ModelHooks(small_cnn) as hooks:
        with caplog.at_level(logging.INFO, logger="explain.inference"):
            graphs = ModelGraphs(small_cnn, hooks, (16, 16), name="small")
        assert "onnxruntime or onnx is not installed" in caplog.text
        assert graphs.full() is None and graphs.split("features.5") is None
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            assert torch.equal(graphs.forward(x), small_cnn(x))


def test_a_graph_is_built_once_when_threads_ask_for_it_at_once(lite0):
    graphs = ModelGraphs(lite0.model, lite0.hooks, lite0.preprocess.input_size)
    built = []
    threads = [threading.Thread(target=lambda: built.append(graphs.full())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(built) == 3 and built[0] is not None
    assert all(graph is built[0] for graph in built)
