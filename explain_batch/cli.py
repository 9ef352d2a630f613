"""``explain-batch INPUT [INPUT ...] --out DIR [options]``: score folders of images with the
library in this process, a running service, or another engine; resumable, results as JSON lines."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from explain.records import ENDPOINTS
from explain_batch.engines import ENGINES, RunAborted, RunConfig, UsageError, engine_module
from explain_batch.options import add_plan_options, chosen_options, positive_int
from explain_batch.run import EXIT_ABORTED, EXIT_INTERRUPTED, EXIT_USAGE, RunRequest, run

__all__ = ["build_parser", "main"]

_SUMMARY = " ".join(__doc__.split("\n\n")[0].split(": ", 1)[1].split())
_DESCRIPTION = _SUMMARY[0].upper() + _SUMMARY[1:]
_EPILOG = """\
exit status: 0 every input scored; 1 some failed (recorded in results.jsonl); 2 a usage error
found before any work; 3 the run stopped early (e.g. the service went away): rerun to resume;
130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="explain-batch",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="an image file, a folder (searched recursively) or @FILE (a manifest: one path per line)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--endpoint", choices=ENDPOINTS, default="predict", help="what to compute (default predict)"
    )
    parser.add_argument(
        "--model",
        default="efficientnet_lite0",
        metavar="SPEC",
        help="model spec (default efficientnet_lite0)",
    )
    add_plan_options(parser)
    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--engine", choices=list(ENGINES), default="local", help="where to score (default local)"
    )
    run_group.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="images per model call (local) or request (http)",
    )
    run_group.add_argument(
        "--no-images", action="store_true", help="scores (and cam values) only, no PNG files"
    )
    run_group.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write overlays and feature-map grids as TensorBoard images",
    )
    run_group.add_argument(
        "--overwrite", action="store_true", help="recompute everything (default: resume)"
    )
    run_group.add_argument(
        "--fail-fast", action="store_true", help="stop at the first failed image"
    )
    run_group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: a bar on a terminal, a plain line every few seconds otherwise)",
    )
    run_group.add_argument(
        "--scorecam-max-channels",
        type=int,
        default=128,
        metavar="N",
        help="Score-CAM scores the N strongest channels (0: all) where this process runs the model (default 128)",
    )
    run_group.add_argument(
        "--optimize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="where this process runs the model: ONNX Runtime graphs for what needs no "
        "gradients, checked against the eager model (default); --no-optimize: eager only",
    )
    for name in ENGINES:
        group = parser.add_argument_group(f"{name} engine")
        for option in engine_module(name).OPTIONS:
            group.add_argument(*option.flags, **option.settings)
    return parser


def _engine_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The chosen engine's options; another engine's option given on the command line is an error."""
    chosen: dict[str, Any] = {}
    for name in ENGINES:
        for option in engine_module(name).OPTIONS:
            value = getattr(args, option.dest)
            if name == args.engine:
                chosen[option.dest] = value
            elif value != parser.get_default(option.dest) and option.dest not in chosen:
                raise UsageError(
                    f"{option.flags[0]} is an option of --engine {name}, not {args.engine}"
                )
    return chosen


_SECRET_FLAGS = ("--api-key",)


def _redacted(argv: Sequence[str]) -> list[str]:
    """The command line with secrets (``--api-key``) replaced, for ``run.json``."""
    shown, hide_next = [], False
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if hide_next:
            shown.append("***")
        elif flag in _SECRET_FLAGS and "=" in arg:
            shown.append(f"{flag}=***")
        else:
            shown.append(arg)
        hide_next = not hide_next and arg in _SECRET_FLAGS
    return shown


def request_from(argv: Sequence[str] | None = None) -> RunRequest:
    """Parse a command line into a :class:`RunRequest`.

    Raises:
        SystemExit: a malformed command line (status 2, argparse's message).
        UsageError: a combination of options that cannot run.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.scorecam_max_channels < 0:
        raise UsageError(
            f"--scorecam-max-channels must be 0 or more, got {args.scorecam_max_channels}"
        )
    config = RunConfig(
        endpoint=args.endpoint,
        model=args.model,
        options=chosen_options(args, args.endpoint),
        pictures=not args.no_images or args.tensorboard is not None,
        batch_size=args.batch_size,
        scorecam_max_channels=args.scorecam_max_channels,
        optimize=args.optimize,
        engine_options=_engine_options(parser, args),
    )
    return RunRequest(
        inputs=args.inputs,
        out=args.out,
        engine=args.engine,
        config=config,
        write_images=not args.no_images,
        overwrite=args.overwrite,
        fail_fast=args.fail_fast,
        progress=args.progress,
        tensorboard=args.tensorboard,
        command=["explain-batch", *_redacted(sys.argv[1:] if argv is None else argv)],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The console script ``explain-batch``; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="explain-batch: %(message)s")
    try:
        return run(request_from(argv))
    except UsageError as error:
        print(f"explain-batch: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except RunAborted as error:
        print(f"explain-batch: stopped: {error}; rerun the same command to resume", file=sys.stderr)
        return EXIT_ABORTED
    except KeyboardInterrupt:
        print("explain-batch: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
