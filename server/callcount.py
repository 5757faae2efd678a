"""Counting a caller's answered calls in their file, described as data so the worker process can do it.

The one vault write that is a job (`CallsToRecord`) rather than a function: the write path sends a
batch of jobs to the worker process (`count_calls_batch`, msgpack in and out) or, without one,
runs `count_calls` itself; each gives back what it did as a `Recorded`.
"""

from __future__ import annotations

import datetime as dt
import enum
from pathlib import Path

import msgspec

from server.edits import new_caller_text, set_properties
from server.parse import VaultFileError, parse_caller
from server.records import Caller
from server.vault import DiskError, Vault


class CallsToRecord(msgspec.Struct, frozen=True, array_like=True):
    """One caller's answered calls, to be counted in their file (in the worker process, or in process)."""

    relpath: str
    key: str
    calls: int
    today: str
    phone: str | None  # the number to keep in the file (STORE_PHONE_NUMBERS), else None
    create: bool  # a new caller: create the file; else it must still be there


class Counted(enum.Enum):
    """What counting one caller's calls did to their file."""

    WRITTEN = "written"  # the new counts are in the file (digest, stat and record say what it holds)
    UNCHANGED = "unchanged"  # nothing to write
    GONE = "gone"  # the file was moved or removed since the index saw it: try again once it is found
    BROKEN = "broken"  # the file does not parse (`error` says why): left to a person
    DISK_ERROR = "disk_error"  # the disk refused the write (`error` says how): the calls wait to be tried again


class Recorded(msgspec.Struct, frozen=True, array_like=True):
    """What counting one caller's calls did: the outcome, and the file's new digest, stat and record."""

    relpath: str
    outcome: Counted
    digest: str | None = None  # None: nothing was written
    stat: int = 0
    record: Caller | None = None
    error: str | None = None
    base: bytes | None = None  # the bytes the change was made on (None: none, or not known)
    data: bytes | None = None  # the bytes written, to commit exactly this change (None: not known)


def count_calls(vault: Vault, job: CallsToRecord) -> Recorded:
    """Count a caller's answered calls in their file (created if new): call_count, first/last_call.

    The file is parsed once; the new record is derived from that parse, since only these keys change.
    """
    derived: list[tuple[str, Caller]] = []

    def change(text: str | None) -> str:
        if text is None:
            if not job.create:
                raise _FileGone
            text = new_caller_text(job.key, phone=job.phone)
        try:
            current = parse_caller(text)
        except VaultFileError as exc:
            raise VaultFileError(f"the caller's file {exc}; fix it first") from None
        today = dt.date.fromisoformat(job.today)
        props: dict[str, object] = {"call_count": current.call_count + job.calls, "last_call": today}
        if current.phone_hash != job.key:
            # A caller imported with the predecessor's plain SHA-256 gets the keyed hash (SPEC §7).
            props = {"phone_hash": job.key, **props}
        if not current.first_call:
            props["first_call"] = today
        if job.phone is not None:
            props["phone"] = job.phone
        text = set_properties(text, props)
        fields = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in props.items() if k != "phone"}
        derived.append((text, msgspec.structs.replace(current, **fields)))
        return text

    try:
        result = vault.update(job.relpath, change)
    except _FileGone:
        return Recorded(job.relpath, Counted.GONE)
    except VaultFileError as exc:
        return Recorded(job.relpath, Counted.BROKEN, error=str(exc))
    except DiskError as exc:
        return Recorded(job.relpath, Counted.DISK_ERROR, error=str(exc))
    if result is None:
        return Recorded(job.relpath, Counted.UNCHANGED)
    text = result.text
    record = derived[-1][1] if derived[-1][0] == text else parse_caller(text)
    stat = vault.stat(job.relpath) or 0
    return Recorded(job.relpath, Counted.WRITTEN, result.digest, stat, record, base=result.base, data=result.data)


class _FileGone(Exception):
    pass


_jobs_decoder = msgspec.msgpack.Decoder(list[CallsToRecord])
_results_encoder = msgspec.msgpack.Encoder()


def count_calls_batch(root: str, jobs: bytes) -> bytes:
    """`count_calls` for a batch of jobs in the vault at `root`; msgpack in and out (the worker's op)."""
    vault = Vault(Path(root))
    return _results_encoder.encode([count_calls(vault, job) for job in _jobs_decoder.decode(jobs)])
