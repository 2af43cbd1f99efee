"""The episode export's lines, shared by both clients: parsing them, and
writing them to a JSON Lines file that appears only once it is complete."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Optional, Union

from .errors import StreamError
from .models import Episode

PathLike = Union[str, "os.PathLike[str]"]


def parse_episode(line: str) -> Episode:
    """One export line as an :class:`Episode`."""
    return Episode.model_validate_json(line)


def cut_short(count: int, error: Exception) -> StreamError:
    """The error of an export whose stream broke after ``count`` lines."""
    return StreamError(
        f"the export stream broke after {count} line(s): {type(error).__name__}: {error} "
        "(the server cuts the stream when its store fails mid-export)"
    )


class JsonlFile:
    """A JSON Lines file written next to its final path (``<path>.part``) and
    moved into place by :meth:`commit`, so a broken export never leaves a
    truncated dataset at ``path``."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._part = self.path.with_name(self.path.name + ".part")
        self._file: Optional[IO[str]] = None
        self.count = 0

    def __enter__(self) -> JsonlFile:
        self._file = open(self._part, "w", encoding="utf-8", newline="\n")
        return self

    def write(self, line: str) -> None:
        """Appends one line (without its newline)."""
        assert self._file is not None, "JsonlFile is used as a context manager"
        self._file.write(line)
        self._file.write("\n")
        self.count += 1

    def __exit__(self, exc_type: object, *rest: object) -> None:
        assert self._file is not None
        self._file.close()
        if exc_type is None:
            os.replace(self._part, self.path)
        else:
            self._part.unlink(missing_ok=True)
