"""Which files a run scores: image files, folders searched recursively, and ``@manifest`` files."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator, Sequence

from explain_batch.engines import Input, UsageError

__all__ = ["IMAGE_SUFFIXES", "check_inputs", "iter_paths", "read_input"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
"""What a folder search takes, in any case; files named one by one are taken whatever their name."""


def check_inputs(inputs: Sequence[str]) -> None:
    """Every ``INPUT`` (file, folder, ``@manifest``) exists.

    Raises:
        UsageError: no inputs, or one that does not exist.
    """
    if not inputs:
        raise UsageError("no inputs: name image files, folders or @manifest files")
    for spec in inputs:
        path = spec[1:] if spec.startswith("@") else spec
        if spec.startswith("@") and not os.path.isfile(path):
            raise UsageError(f"manifest {path!r} does not exist")
        if not os.path.exists(path):
            raise UsageError(f"input {path!r} does not exist")


def iter_paths(inputs: Sequence[str]) -> Iterator[str]:
    """The paths to score, streamed: files as given, folders walked in sorted order (hidden files
    and folders skipped), manifests read line by line (blank lines and ``#`` comments skipped;
    relative paths are relative to the manifest's folder; a line may name a folder)."""
    for spec in inputs:
        if spec.startswith("@"):
            yield from _manifest(spec[1:])
        else:
            yield from _entry(spec)


def _entry(path: str) -> Iterator[str]:
    if os.path.isdir(path):
        yield from _walk(path)
    else:
        yield os.path.normpath(path)


def _walk(folder: str) -> Iterator[str]:
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                yield os.path.normpath(os.path.join(root, name))


def _manifest(manifest: str) -> Iterator[str]:
    base = os.path.dirname(manifest)
    with open(manifest, encoding="utf-8") as lines:
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                yield from _entry(entry if os.path.isabs(entry) else os.path.join(base, entry))


def read_input(path: str) -> Input:
    """The file's bytes and SHA-256; a file that cannot be read is an input with an ``error``
    (``not_found``, ``unreadable_file``)."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        code = "not_found" if error.errno == errno.ENOENT else "unreadable_file"
        return Input(
            path, b"", None, {"code": code, "message": f"cannot read {path}: {error.strerror}"}
        )
    return Input(path, data, hashlib.sha256(data).hexdigest())
