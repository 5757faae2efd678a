"""Atomic writes of one file: a temporary file renamed into place, only over the version that was read.

Knows nothing of the vault's layout or of markdown: `server.vault` uses it for every write. A person
may be editing the same file, so `swap` replaces only the exact version its change was made on, and an
append that lands on that version during the swap is put back and the change re-applied on top.
"""

from __future__ import annotations

import codecs
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from server.parse import VaultFileError

# How often `swap` starts again on a file that keeps changing under it before giving up.
_ATTEMPTS = 20


class Swapped(NamedTuple):
    """One change swapped into place: the new text, the bytes it was made on and the bytes written."""

    text: str
    base: bytes | None  # None: the file did not exist
    data: bytes


def temp_file(path: Path, data: bytes) -> Path:
    """Write `data` to a new temporary file beside `path` (named `.<name>.<pid>-<random>.mb.tmp`)."""
    # No fsync: the rename is atomic against a crashed process, which is the failure that
    # matters here; git does not fsync its objects by default either. The writer's pid is in the
    # name: another process (the CLI beside a server) must not take a live write's file for a leftover.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.mb.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
    except OSError:
        # A full or failing disk: the file may exist, empty or half-written; it must not stay.
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def is_leftover(tmp: Path) -> bool:
    """Whether a temporary file was left by a write that can no longer finish (its process is gone)."""
    writer, dash, _ = tmp.name.removesuffix(".mb.tmp").rsplit(".", 1)[-1].partition("-")
    if not dash or not writer.isdigit() or int(writer) == 0:
        return True  # no pid in the name: an older version's, or not ours to wait for
    try:
        os.kill(int(writer), 0)
    except (ProcessLookupError, OverflowError):
        return True  # no such process (any more)
    except PermissionError:
        return False  # alive, as another user
    return False


def replace(path: Path, data: bytes) -> None:
    """Atomically replace (or create) `path` with `data`; no temporary file is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file(path, data)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def swap(
    path: Path, change: Callable[[str | None], str | None], before_rename: Callable[[bytes], None]
) -> Swapped | None:
    """Apply `change` to the file's current text (None if absent) and swap the result into place.

    Returns None when there was nothing to change. `before_rename(data)` runs just before the new
    bytes can appear at `path`, so that whoever watches the file can recognise them. A UTF-8 byte
    order mark is kept, like every other byte the change did not touch. Raises VaultFileError if
    the file keeps changing, and OSError when the disk refuses.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(_ATTEMPTS):
        try:
            fh = open(path, "rb")  # noqa: SIM115 - held open across the swap, closed below
        except FileNotFoundError:
            fh = None
        try:
            seen = os.fstat(fh.fileno()) if fh else None
            raw = fh.read() if fh else b""
            bom = codecs.BOM_UTF8 if raw.startswith(codecs.BOM_UTF8) else b""
            current = raw.decode("utf-8-sig") if fh else None
            updated = change(current)
            if updated is None or updated == current:
                return None
            data = bom + updated.encode("utf-8")
            tmp = temp_file(path, data)
            before_rename(data)
            try:
                if seen is None:
                    try:
                        os.link(tmp, path)  # create only if still absent
                    except FileExistsError:
                        continue
                else:
                    try:
                        now = os.lstat(path)
                    except FileNotFoundError:
                        continue  # removed by a person since we read it: start again from "missing"
                    if (now.st_ino, now.st_size, now.st_mtime_ns) != (seen.st_ino, seen.st_size, seen.st_mtime_ns):
                        continue
                    os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            if seen is not None and fh is not None:
                late = os.fstat(fh.fileno())
                if (late.st_size, late.st_mtime_ns) != (seen.st_size, seen.st_mtime_ns):
                    # Written to the version we replaced, mid-swap: put it back and redo ours on top.
                    fh.seek(0)
                    back = temp_file(path, fh.read())
                    try:
                        os.replace(back, path)
                    finally:
                        back.unlink(missing_ok=True)
                    continue
            return Swapped(updated, raw if fh else None, data)
        finally:
            if fh:
                fh.close()
    raise VaultFileError("the file kept changing while it was being written; try again")
