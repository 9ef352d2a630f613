"""The endpoints' options on the command line: one table, from ``--flag`` to the keyword that
:func:`explain.records.make_plan` (and the HTTP API) takes. A new option is one line here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from explain.records import ENDPOINTS, plan_options
from explain_batch.engines import UsageError

__all__ = ["PLAN_OPTIONS", "PlanOption", "add_plan_options", "chosen_options", "positive_int"]


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class PlanOption:
    """One option: ``--name-with-dashes`` on the command line, ``name`` for the plan and the API.

    Attributes:
        name: The keyword (``top_k``).
        help: What it means (its default included).
        type: Parses one value; ``None`` for a flag (``--return-cam``).
        repeat: The option may be given several times; the values make a list.
        comma_list: A value may also be a comma-separated list (``--layers a,b``).
    """

    name: str
    help: str
    type: Callable[[str], Any] | None = str
    repeat: bool = False
    comma_list: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


PLAN_OPTIONS: tuple[PlanOption, ...] = (
    PlanOption("top_k", "top classes per image (default 5)", positive_int),
    PlanOption(
        "layers",
        "featuremaps: layers to show, repeatable or comma-separated (default: the model's stages)",
        _names,
        repeat=True,
        comma_list=True,
    ),
    PlanOption("max_channels", "featuremaps: channels shown per layer (default 64)", positive_int),
    PlanOption("method", "gradcam: the CAM method (default gradcam)"),
    PlanOption("layer", "gradcam: the target layer (default: the map before global pooling)"),
    PlanOption(
        "target",
        "gradcam: class index or label to explain, repeatable (default: top-1)",
        repeat=True,
    ),
    PlanOption("alpha", "gradcam: heatmap opacity in the overlay (default 0.5)", float),
    PlanOption("colormap", "gradcam: a matplotlib colour map (default jet)"),
    PlanOption("return_cam", "gradcam: also record the raw map as numbers", None),
    PlanOption(
        "faithfulness",
        "gradcam: also score each map (confidence_change, deletion_auc, insertion_auc; about 33 "
        "more forward passes per map)",
        None,
    ),
)


def add_plan_options(parser: argparse.ArgumentParser) -> None:
    """Add every :data:`PLAN_OPTIONS` entry; an option not given stays ``None`` (the default)."""
    group = parser.add_argument_group(
        "endpoint options (the HTTP API's, same meanings and defaults)"
    )
    for option in PLAN_OPTIONS:
        if option.type is None:
            group.add_argument(
                option.flag, dest=option.name, action="store_const", const=True, help=option.help
            )
        elif option.repeat:
            action = "extend" if option.comma_list else "append"
            group.add_argument(
                option.flag, dest=option.name, action=action, type=option.type, help=option.help
            )
        else:
            group.add_argument(option.flag, dest=option.name, type=option.type, help=option.help)


def chosen_options(args: argparse.Namespace, endpoint: str) -> dict[str, Any]:
    """The options given on the command line, by plan keyword.

    Raises:
        UsageError: an option that ``endpoint`` does not take.
    """
    accepted = plan_options(endpoint)
    chosen = {}
    for option in PLAN_OPTIONS:
        value = getattr(args, option.name)
        if value is None:
            continue
        if option.name not in accepted:
            users = [e for e in ENDPOINTS if option.name in plan_options(e)]
            raise UsageError(
                f"{option.flag} is an option of {' and '.join(users)}, not of {endpoint}"
            )
        chosen[option.name] = value
    return chosen
