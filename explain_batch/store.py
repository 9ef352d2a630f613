"""The output folder: ``results.jsonl`` (appended line by line, resumable), ``images/`` and
``run.json``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from typing import Any

from explain.records import PICTURE_FIELDS
from explain_batch.engines import PASSING_ERRORS, Outcome, UsageError

__all__ = ["OutputDir", "ResultsLog"]

_FAILED, _RETRY = 1, 2
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_SYNC_SECONDS = 1.0


def _key(path: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    )


def _entry(sha256: str | None, error: Mapping[str, str] | None) -> int:
    """What the index keeps of one line: 60 bits of the SHA-256 and two flags."""
    digest = int(sha256[:15], 16) if sha256 else 0
    flags = (_FAILED if error else 0) | (
        _RETRY if error and error.get("code") in PASSING_ERRORS else 0
    )
    return digest << 2 | flags


class ResultsLog:
    """``results.jsonl``: an index of what it holds (a few dozen bytes per input, no records), and
    whole lines appended as results come.

    Each line is one ``write`` of a complete line, so a killed run leaves whole lines; a torn last
    line (a crash of the machine mid-write) is cut off when the log is opened. The file is synced
    to disk at least every second and when it is closed. When an input is recorded twice (its
    file changed, or a passing failure was retried), the log is rewritten at the end with the
    last line of each input only.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._index: dict[int, int] = {}
        self._compact = False
        self._fd = -1
        self._synced = time.monotonic()

    def open(self) -> None:
        """Read the index, cut a torn last line, open for appending."""
        if os.path.exists(self.path):
            self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self) -> None:
        end = 0
        with open(self.path, "rb") as lines:
            for line in lines:
                if not line.endswith(b"\n"):
                    break
                end += len(line)
                try:
                    record = json.loads(line)
                    key = _key(record["path"])
                except (ValueError, KeyError, TypeError):
                    self._compact = True  # rewriting drops it
                    continue
                self._compact |= key in self._index
                self._index[key] = _entry(record.get("sha256"), record.get("error"))
        if end < os.path.getsize(self.path):
            os.truncate(self.path, end)

    def settled(self, path: str) -> bool:
        """Whether ``path`` is recorded with a result that a rerun keeps if the file did not change
        (not a passing failure): only then is the file worth hashing to compare (:meth:`lookup`)."""
        entry = self._index.get(_key(path))
        return entry is not None and not entry & _RETRY

    def lookup(self, path: str, sha256: str | None) -> str | None:
        """``"ok"`` or ``"failed"`` when ``path`` is recorded with this ``sha256`` and need not be
        scored again, else ``None``."""
        entry = self._index.get(_key(path))
        if entry is None or entry & _RETRY or entry >> 2 != _entry(sha256, None) >> 2:
            return None
        return "failed" if entry & _FAILED else "ok"

    def append(self, line: Mapping[str, Any]) -> None:
        key = _key(line["path"])
        self._compact |= key in self._index
        self._index[key] = _entry(line.get("sha256"), line.get("error"))
        data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        written = os.write(self._fd, data)
        if written != len(data):  # a full disk: the torn line is cut on the next open
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        if time.monotonic() - self._synced > _SYNC_SECONDS:
            os.fsync(self._fd)
            self._synced = time.monotonic()

    def close(self) -> None:
        if self._fd < 0:
            return
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        if self._compact:
            self._rewrite()

    def _rewrite(self) -> None:
        """Keep the last line of each input (and drop lines that do not parse)."""
        last: dict[int, int] = {}
        with open(self.path, "rb") as lines:
            for number, line in enumerate(lines):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    last[_key(json.loads(line)["path"])] = number
        keep = set(last.values())
        del last
        temporary = self.path + ".tmp"
        with open(self.path, "rb") as lines, open(temporary, "wb") as out:
            for number, line in enumerate(lines):
                if number in keep:
                    out.write(line)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        self._compact = False


class OutputDir:
    """The run's folder ``DIR``.

    Args:
        root: The folder (made if missing).
        write_images: Write PNG files (``--no-images`` turns it off).
    """

    def __init__(self, root: str, write_images: bool = True) -> None:
        self.root = root
        self.write_images = write_images
        self.results = ResultsLog(os.path.join(root, "results.jsonl"))
        self.run_file = os.path.join(root, "run.json")
        self._folders: set[str] = set()

    def previous_run(self) -> dict[str, Any] | None:
        try:
            with open(self.run_file, encoding="utf-8") as file:
                return json.load(file)
        except (OSError, ValueError):
            return None

    def check(self, settings: Mapping[str, Any], overwrite: bool) -> None:
        """Unless ``overwrite``, check that an earlier run in the folder had the same ``settings``
        (the keys of ``run.json`` that the results depend on).

        Raises:
            UsageError: the folder holds results made with other settings.
        """
        previous = self.previous_run()
        if overwrite or previous is None:
            return
        changed = sorted(name for name, value in settings.items() if previous.get(name) != value)
        if changed:
            shown = "; ".join(
                f"{name}: {previous.get(name)!r} -> {settings[name]!r}" for name in changed
            )
            raise UsageError(
                f"{self.root} holds results made with other settings ({shown}); pass --overwrite "
                "to recompute them, or choose another --out folder"
            )

    def start(self, overwrite: bool) -> None:
        """Make the folder; with ``overwrite``, remove an earlier run's results and images."""
        if overwrite:
            for path in (self.results.path, self.run_file):
                if os.path.exists(path):
                    os.remove(path)
            shutil.rmtree(os.path.join(self.root, "images"), ignore_errors=True)
        os.makedirs(self.root, exist_ok=True)

    def write_run(self, summary: Mapping[str, Any]) -> None:
        """Replace ``run.json`` (atomically)."""
        temporary = self.run_file + ".tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(summary, file, indent=2, ensure_ascii=False)
            file.write("\n")
        os.replace(temporary, self.run_file)

    def line(self, outcome: Outcome, model: str) -> dict[str, Any]:
        """The ``results.jsonl`` object of ``outcome``, its PNG files written."""
        line: dict[str, Any] = {"path": outcome.path, "sha256": outcome.sha256, "model": model}
        if outcome.error is not None or outcome.record is None:
            line["error"] = outcome.error
            return line
        record = self._files(outcome.record, outcome.path, set())
        for name in ("top_k", "featuremaps", "explanations", "warnings"):
            line[name] = record.pop(name, None)
        line.update(record)  # fields added to the API later
        line["error"] = None
        return line

    def _files(self, value: Any, path: str, used: set[str]) -> Any:
        if isinstance(value, list):
            return [self._files(item, path, used) for item in value]
        if not isinstance(value, dict):
            return value
        out = {}
        for key, item in value.items():
            if key not in PICTURE_FIELDS:
                out[key] = self._files(item, path, used)
            elif self.write_images and isinstance(item, bytes):
                out[PICTURE_FIELDS[key]] = self._write_png(item, path, key, value, used)
        return out

    def _write_png(
        self, data: bytes, path: str, field: str, entry: Mapping[str, Any], used: set[str]
    ) -> str:
        """Write one PNG; its name is derived from the input's path (so it is the same on every
        run and differs between two inputs with the same content) and from what it shows."""
        digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()
        stem = _UNSAFE.sub("_", os.path.splitext(os.path.basename(path))[0])[:40]
        parts = [field.removesuffix("_png").removesuffix("png") or "featuremap"]
        parts += [str(entry[name]) for name in ("layer", "index") if name in entry]
        name = _UNSAFE.sub("_", "-".join(parts))
        relative, number = f"images/{digest[:2]}/{digest[2:18]}-{stem}-{name}.png", 1
        while relative in used:
            number += 1
            relative = f"images/{digest[:2]}/{digest[2:18]}-{stem}-{name}-{number}.png"
        used.add(relative)
        folder = os.path.join(self.root, "images", digest[:2])
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        with open(os.path.join(self.root, relative), "wb") as file:
            file.write(data)
        return relative
