"""Class labels: turning what a user calls a class (an index or a name) into an index."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

from explain.errors import AmbiguousLabelError, TargetOutOfRangeError, UnknownLabelError

__all__ = ["Labels"]


class Labels(Sequence[str]):
    """A model's category names, by class index."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._names[index]

    def __len__(self) -> int:
        return len(self._names)

    @cached_property
    def _by_name(self) -> dict[str, list[int]]:
        table: dict[str, list[int]] = {}
        for index, name in enumerate(self._names):
            table.setdefault(name.casefold(), []).append(index)
        return table

    def resolve(self, target: int | str) -> int:
        """The class index for ``target``: an index (int, or a string that parses as one) or a
        label matched case-insensitively.

        Raises:
            TargetOutOfRangeError: an index outside ``[0, len(labels))``.
            UnknownLabelError: no class has that label (close matches are listed).
            AmbiguousLabelError: several classes have that label (ImageNet's "crane").
        """
        if isinstance(target, str):
            text = target.strip()
            try:
                target = int(text)
            except ValueError:
                indices = self._by_name.get(text.casefold())
                if indices is None:
                    raise UnknownLabelError(text, self._names) from None
                if len(indices) > 1:
                    raise AmbiguousLabelError(text, indices) from None
                return indices[0]
        if isinstance(target, bool) or not isinstance(target, int):
            raise TypeError(f"a target is a class index or label, not {type(target).__name__}")
        if not 0 <= target < len(self._names):
            raise TargetOutOfRangeError(
                f"class index {target} is outside 0..{len(self._names) - 1}"
            )
        return target
