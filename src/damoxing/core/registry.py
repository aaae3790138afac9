"""One registry per extension kind (models, optimizers, schedules, metrics), filled by a decorator
where each thing is defined. Duplicate names are errors; an unknown name lists the valid ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from damoxing.core.errors import ConfigError, choices_text, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map for one kind of extension (e.g. 'model')."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@MODELS.register("mlp")` above a class or function."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(
                f"Unknown {self.kind} '{name}'.{did_you_mean(name, self._entries)} "
                f"Valid {self.kind}s: {choices_text(self._entries)}."
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
