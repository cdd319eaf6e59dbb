"""Two loops over file-like objects that the reader and the writer share.

Python's ``readinto`` and ``write`` may do less than asked (pipes, sockets,
raw files), so both sides of the envelope need "until done" loops. They live
here rather than in either side so that neither imports the other's private
helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

__all__ = ["Readinto", "fill", "write_all"]

#: ``readinto`` of a binary source: fills a prefix of the buffer, returns the count.
Readinto = Callable[[memoryview], int]


def fill(readinto: Readinto, buf: memoryview) -> int:
    """Read until ``buf`` is full or the source ends; return the count."""
    got = 0
    while got < len(buf):
        n = readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def write_all(dst: BinaryIO, data: memoryview) -> None:
    """Write all of ``data``, looping over short writes.

    A ``write`` that returns None is taken as complete: some file-like objects
    do not report a count. (A non-blocking raw stream also returns None, for
    "nothing written"; such destinations are not supported.)
    """
    while data:
        n = dst.write(data)
        if n is None or n >= len(data):
            return
        data = data[n:]
