"""Named tables of the pipeline's extension points (criteria, control masks, metric groups): each table is the one
home of its names, and an unknown name fails with the table's list of names."""
from __future__ import annotations


class Registry(dict):
    """A dict of name -> entry that names itself in its errors (`what`, e.g. 'criterion')."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def pick(self, name):
        """The entry of `name`; ValueError listing the registered names if there is none."""
        if name not in self:
            raise ValueError(f"unknown {self.what} {name!r}; registered: {', '.join(self)}")
        return self[name]

    def add(self, name: str, entry) -> None:
        """Register `entry` under a new, non-empty name (a registered name is never silently replaced)."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}")
        if name in self:
            raise ValueError(f"{self.what} {name!r} is already registered; remove it first to replace it")
        self[name] = entry
