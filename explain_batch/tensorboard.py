"""``--tensorboard DIR``: each image's overlays and feature-map grids as TensorBoard images, tagged
by the image's path and the layer, and its top classes as text."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from explain_batch.engines import Outcome, UsageError

__all__ = ["TensorBoardLog", "check_available"]

_MISSING = (
    "--tensorboard needs the tensorboard package: pip install 'explain-service[tensorboard]' "
    "(or pip install tensorboard)"
)


def check_available() -> None:
    """Raises:
    UsageError: the ``tensorboard`` package is not installed.
    """
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as error:
        raise UsageError(_MISSING) from error


def _png_size(png: bytes) -> tuple[int, int, int]:
    """``(height, width, channels)`` from a PNG's header (no decoding)."""
    width, height, _, colour = struct.unpack(">IIBB", png[16:26])
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour, 3)
    return height, width, channels


class TensorBoardLog:
    """Writes with ``torch.utils.tensorboard.SummaryWriter``. The PNGs the run made are written as
    they are (TensorBoard stores images as PNG), so nothing is decoded or encoded again.

    Args:
        log_dir: TensorBoard's log folder.

    Raises:
        UsageError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: str) -> None:
        check_available()
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import SummaryWriter

        self._summary = Summary
        self.writer = SummaryWriter(log_dir=log_dir)

    def add(self, outcome: Outcome) -> None:
        """Log one scored image (failures are not logged)."""
        record = outcome.record
        if record is None:
            return
        values = [self._image(tag, png) for tag, png in self._pictures(outcome.path, record)]
        if values:
            self.writer.file_writer.add_summary(self._summary(value=values), 0)
        rows = "\n".join(
            f"| {s['index']} | {s['label']} | {s['score']:.4f} |" for s in record.get("top_k") or []
        )
        self.writer.add_text(
            f"{outcome.path}/top_k", "| index | label | score |\n| --- | --- | --- |\n" + rows
        )

    @staticmethod
    def _pictures(path: str, record: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
        for entry in record.get("featuremaps") or []:
            if isinstance(entry.get("png"), bytes):
                yield f"{path}/featuremaps/{entry['layer']}", entry["png"]
        for entry in record.get("explanations") or []:
            if isinstance(entry.get("overlay_png"), bytes):
                yield (
                    f"{path}/{entry['method']}/{entry['layer']}/{entry['index']}",
                    entry["overlay_png"],
                )

    def _image(self, tag: str, png: bytes) -> Any:
        height, width, channels = _png_size(png)
        image = self._summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png
        )
        return self._summary.Value(tag=tag, image=image)

    def close(self) -> None:
        self.writer.close()
