"""One model copy scoring batches of inputs: read, decode, run, render. The local engine runs the
steps on different threads; an engine that ships work to other processes (one copy per worker,
such as a Ray actor) calls the scorer on a whole batch of paths.

The steps are the library's, the same as the service's model tasks: :func:`explain.images.prepare_image`,
:class:`explain.tasks.TaskRunner`, :func:`explain.records.make_plan` and :func:`~explain.records.render_record`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from explain.errors import ExplainError
from explain.images import ImageLimits, PreparedImage, prepare_image
from explain.models import load_model
from explain.records import Picture, make_plan, map_pictures, render_record
from explain.tasks import ImageOutput, TaskRunner
from explain_batch.engines import Input, Outcome, RunConfig, UsageError
from explain_batch.inputs import read_input

__all__ = ["Prepared", "Scorer"]

log = logging.getLogger("explain_batch")


@dataclass(frozen=True)
class Prepared:
    """An input decoded for the model, or the outcome that ends it (an image that cannot be read)."""

    item: Input
    image: PreparedImage | None = None
    failure: Outcome | None = None


class Scorer:
    """Loads the model and checks the options once (``__init__``), then scores batches.

    Args:
        config: What to compute.
        limits: What an image may be (the service's defaults).

    Raises:
        UsageError: an unknown model, weights that cannot load, or options the endpoint refuses.
    """

    def __init__(self, config: RunConfig, limits: ImageLimits | None = None) -> None:
        # Every image is checked against limits.max_pixels from its header before decoding;
        # Pillow's process-wide check would warn or refuse at another limit.
        Image.MAX_IMAGE_PIXELS = None
        self.config = config
        self.limits = limits or ImageLimits()
        try:
            self.loaded = load_model(config.model)
            self.plan = make_plan(config.endpoint, self.loaded, **config.options)
            scorecam = {"max_channels": config.scorecam_max_channels or None}
            self.runner = TaskRunner(self.loaded, {"scorecam": scorecam}, optimize=config.optimize)
            self._try_out()
        except (ExplainError, ValueError) as error:
            raise UsageError(f"{getattr(error, 'code', 'invalid_option')}: {error}") from error
        except TypeError as error:  # an option the endpoint does not take
            raise UsageError(f"invalid_option: {error}") from error

    def _try_out(self) -> None:
        """Run the task once on a blank image: what only running can refuse (a method that does
        not fit the model) is refused before any work, and the first real batch is not slower."""
        blank = torch.zeros(1, 3, *self.loaded.preprocess.input_size)
        self.runner(self.plan.task, blank, [self.plan.targets])

    @property
    def model(self) -> str:
        return self.loaded.name

    def close(self) -> None:
        self.loaded.close()

    def __call__(self, paths: list[str]) -> list[Outcome]:
        """Read and score one batch start to end on the calling thread."""
        return self.finish(self.forward([self.read(path) for path in paths]))

    def read(self, path: str) -> Prepared:
        """Read, hash, decode and preprocess the file at ``path`` (any thread); a file that cannot
        be read ends here (``not_found``, ``unreadable_file``)."""
        item = read_input(path)
        if item.error is not None:
            return Prepared(item, failure=Outcome.failed(item, **item.error))
        return self.prepare(item)

    def prepare(self, item: Input) -> Prepared:
        """Decode and preprocess one input read from its file (any thread)."""
        try:
            image = prepare_image(item.data, self.loaded.preprocess, self.limits)
        except ExplainError as error:
            message = str(error).replace("image 0", item.path, 1)
            return Prepared(item, failure=Outcome.failed(item, error.code, message))
        return Prepared(item, image)

    def forward(self, batch: list[Prepared]) -> list[tuple[Prepared, ImageOutput | Outcome]]:
        """Run the model on the batch's decoded images (the model's thread). An image that makes
        the model fail is retried alone, and only it fails (``internal_error``).

        Raises:
            UsageError: the task cannot run on this model at all (the same for every image).
        """
        ready = [p for p in batch if p.image is not None]
        done: list[tuple[Prepared, ImageOutput | Outcome]] = [
            (p, p.failure) for p in batch if p.failure is not None
        ]
        if ready:
            done.extend(zip(ready, self._run(ready), strict=True))
        return done

    def _run(self, ready: list[Prepared]) -> list[ImageOutput | Outcome]:
        plan = self.plan
        inputs = torch.stack([p.image.tensor for p in ready])  # type: ignore[union-attr]
        try:
            return list(self.runner(plan.task, inputs, [plan.targets] * len(ready)))
        except ExplainError as error:
            raise UsageError(f"{error.code}: {error}") from error
        except Exception as error:
            if len(ready) > 1:
                log.warning(
                    "a batch of %d failed (%r); running it image by image", len(ready), error
                )
                return [output for p in ready for output in self._run([p])]
            log.exception("the model failed on %s", ready[0].item.path)
            return [Outcome.failed(ready[0].item, "internal_error", f"the model failed: {error!r}")]

    def finish(self, scored: list[tuple[Prepared, ImageOutput | Outcome]]) -> list[Outcome]:
        """Records with their pictures encoded as PNG bytes (any thread)."""
        return [
            output if isinstance(output, Outcome) else self._record(prepared, output)
            for prepared, output in scored
        ]

    def _record(self, prepared: Prepared, output: ImageOutput) -> Outcome:
        assert prepared.image is not None  # only decoded images reach the model
        record = render_record(self.plan, prepared.image, output)
        pictures = self.config.pictures

        def encode(picture: Picture, field: str, entry: dict[str, Any]) -> bytes | None:
            return picture.encode() if pictures else None

        item = prepared.item
        return Outcome(item.path, item.sha256, map_pictures(record, encode))
