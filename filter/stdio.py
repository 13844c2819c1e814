"""Writing a whole message to standard output, or failing loudly."""

from __future__ import annotations


def write_all(stream, data: bytes) -> None:
    """Write all of `data` to `stream` and flush it; OSError when not all of it was taken.

    A buffered writer whose reader goes away in the middle of a large write returns the count
    the pipe took (64 KB) instead of raising, and its flush then has nothing left to write: a
    message cut short would look delivered (exit 0) and the MTA would not retry. Writing the
    rest again meets the broken pipe as an error."""
    view = memoryview(data)
    while view:
        taken = stream.write(view)
        if taken is None:  # a raw stream in non-blocking mode took nothing
            taken = 0
        if taken <= 0:
            raise OSError(32, "standard output took only part of the message")
        view = view[taken:]
    stream.flush()
