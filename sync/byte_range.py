"""One HTTP ``Range: bytes=`` header, as the service and ``vet serve`` both answer it."""

from __future__ import annotations

import re

_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")


class Unsatisfiable(Exception):
    """The range starts past the end (answer 416 with ``Content-Range: bytes */size``)."""

    def __init__(self, size: int) -> None:
        super().__init__("range not satisfiable")
        self.size = size


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single ``bytes=`` range; None means the whole body."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None  # several ranges or another unit: RFC 9110 lets us send it all
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0:
            raise Unsatisfiable(size)
        return max(0, size - count), size
    start = int(first)
    if start >= size or (last and int(last) < start):
        raise Unsatisfiable(size)
    end = size - 1 if not last else min(int(last), size - 1)
    return start, end + 1
