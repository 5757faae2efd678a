"""The worker process itself: answers the server's requests, one at a time, until its stdin closes.

Apart from `server.worker` (the server's side) so that the child imports only what its requests
need: no event loop, no web framework; the vault code only once it records calls.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec

LENGTH = struct.Struct(">I")  # each message: its length, then a msgpack body
# Background work: when the machine is busy, the server answering calls gets the CPU first (git,
# started from here, inherits this).
NICENESS = 19
_PR_SET_PDEATHSIG = 1


class Ran(msgspec.Struct, array_like=True):
    """What a command run by the worker did."""

    returncode: int
    stdout: bytes
    stderr: bytes


def _run(argv: list[str], env: dict[str, str], stdin: bytes = b"") -> bytes:
    # Always a pipe of its own: the child's stdin is the server's request stream, never git's.
    proc = subprocess.run(argv, env=env, input=stdin, capture_output=True, check=False)
    return msgspec.msgpack.encode(Ran(proc.returncode, proc.stdout, proc.stderr))


def _record_calls(root: str, jobs: bytes) -> bytes:
    from server.callcount import count_calls_batch  # imported on the first recorded call, not at start

    return count_calls_batch(root, jobs)


OPS: dict[str, Callable[..., bytes]] = {"run": _run, "record_calls": _record_calls}


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Answer requests until stdin closes: ("ok", result) or ("error", "Type: message")."""
    while header := _read_exactly(stdin, LENGTH.size):
        (size,) = LENGTH.unpack(header)
        op, args = msgspec.msgpack.decode(_read_exactly(stdin, size))
        try:
            reply: tuple[str, Any] = ("ok", OPS[op](*args))
        except Exception as exc:  # reported to the server, which decides what it means
            reply = ("error", f"{type(exc).__name__}: {exc}")
        body = msgspec.msgpack.encode(reply)
        _write_all(stdout, LENGTH.pack(len(body)) + body)


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    """`size` bytes, or b"" at a clean end of input; EOFError when the input ends inside a message.

    A raw (unbuffered) pipe hands out what it holds, which may be less than a message.
    """
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            if data:
                raise EOFError(f"the request ended after {len(data)} of {size} bytes")
            return b""
        data += chunk
    return data


def _write_all(stream: BinaryIO, data: bytes) -> None:
    """Write every byte of `data` and flush.

    Under PYTHONUNBUFFERED (as in the container image) stdout is a raw file, whose `write` may take
    only part of a message larger than the pipe when a signal interrupts it: the server would wait
    for the rest forever.
    """
    view = memoryview(data)
    while view:
        written = stream.write(view)
        view = view[written if written is not None else 0 :]
    stream.flush()


def main() -> None:
    """Entry point of `python -m server.worker_child` (started by `server.worker.Worker`, never by hand)."""
    # A Ctrl+C meant for the server must not stop a commit half-way: the server closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # But a server that is killed outright takes its worker with it (no orphan keeps writing).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        return  # the server died before we could ask to follow it
    os.nice(NICENESS)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
