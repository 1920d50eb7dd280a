"""Things chosen by name in a config (activations, initializers, optimizers, datasets).

Each registry holds records of one small dataclass (a name, how to build it, and what else the
code needs to know about it), and `get` is the one place an unknown name is reported.
"""

from __future__ import annotations

from typing import Generic, TypeVar

Record = TypeVar("Record")


class Registry(dict, Generic[Record]):
    """name -> record, in the order given (the order `--help` and errors list them)."""

    def __init__(self, kind: str, records: list[Record]):
        super().__init__((record.name, record) for record in records)
        self.kind = kind

    def get(self, name: str) -> Record:  # type: ignore[override]
        if name not in self:
            raise KeyError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self)}")
        return self[name]

    def names(self, where=lambda record: True) -> list[str]:
        return [name for name, record in self.items() if where(record)]
