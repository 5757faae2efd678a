"""Erasure's history filter, pure: a `git fast-export` stream in, the same history without erased callers out.

A caller is erased by a token, `HMAC-SHA256(phone-hash key, "erase" NUL caller key)`: it names the
caller to whoever holds the key (the replicas), and to nobody else, so it may travel in a commit
trailer. Every blob whose frontmatter `phone_hash` has an erased token is dropped, with every file
change that wrote it; every line of a commit or tag message that names an erased caller (key, short
key, name, alias, or a file name the caller had) is replaced. The filter is deterministic: two
replicas that share history and tokens rewrite their shared commits into the same new commits, so
their histories meet again after an erasure.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

import msgspec

from server import parse
from server.phone import short

# The trailer of the content-free commit that records an erasure; its value is the token.
TRAILER = "Erased"
# What a message line that named an erased caller becomes.
REPLACED = "a change for an erased caller"
_TOKEN = re.compile(rb"^Erased: ([0-9a-f]{64})( blocked)?[ \t]*$", re.MULTILINE)
_PHONE_HASH = re.compile(rb"^phone_hash:[ \t]*[\"']?([0-9a-f]{64})[\"']?[ \t]*$", re.MULTILINE)
# Where a caller file's frontmatter ends, at most: a key further down is not the file's identity.
_FRONTMATTER_BYTES = 64 * 1024
# Names shorter than this are not looked for in messages: "Al" would match half the log.
_MIN_NAME = 3


def token(secret: bytes, key: str) -> str:
    """The erasure token of caller key `key` under the phone-hash key `secret`."""
    return hmac.new(secret, b"erase\0" + key.encode("ascii"), hashlib.sha256).hexdigest()


def tokens_in(message: str) -> list[tuple[str, bool]]:
    """The erasure tokens named by `Erased:` trailers in a commit message, each with whether it blocks."""
    return [(tok.decode(), bool(blocked)) for tok, blocked in _TOKEN.findall(message.encode())]


def trailer(tok: str, blocked: bool) -> str:
    """The trailer line that records an erasure (and a block) in the content-free commit."""
    return f"{TRAILER}: {tok}{' blocked' if blocked else ''}"


def key_of(blob: bytes) -> str | None:
    """The `phone_hash` a file's frontmatter declares, if it looks like a caller file."""
    if not blob.startswith(b"---"):
        return None
    found = _PHONE_HASH.search(blob, 0, _FRONTMATTER_BYTES)
    return found.group(1).decode() if found else None


class Found(msgspec.Struct):
    """What the first pass found out about the erased callers in a stream."""

    keys: set[str] = msgspec.field(default_factory=set)
    names: set[str] = msgspec.field(default_factory=set)
    paths: set[str] = msgspec.field(default_factory=set)

    def needles(self) -> list[str]:
        """Everything that names an erased caller in a message, lower-cased, longest first."""
        words = set(self.keys) | {short(key) for key in self.keys}
        words |= {name for name in self.names if len(name) >= _MIN_NAME}
        for path in self.paths:
            words.add(path)
            stem = path.rsplit("/", 1)[-1].removesuffix(".md")
            if len(stem) >= _MIN_NAME:
                words.add(stem)
        return sorted({word.lower() for word in words}, key=lambda word: (-len(word), word))


# -- the stream --------------------------------------------------------------------------------------


class Blob(msgspec.Struct):
    """`blob`: its header lines (mark, original-oid) and its bytes."""

    header: list[bytes]
    data: bytes

    @property
    def mark(self) -> bytes | None:
        """Its mark (`:N`), if it has one."""
        return next((line[5:] for line in self.header if line.startswith(b"mark ")), None)


class Commit(msgspec.Struct):
    """`commit` or `tag`: the lines before its message, the message, and the lines after it."""

    header: list[bytes]
    message: bytes
    changes: list[bytes]

    def value(self, name: bytes) -> bytes | None:
        """A header line's value (`mark`, `original-oid`)."""
        return next((line[len(name) + 1 :] for line in self.header if line.startswith(name + b" ")), None)


Event = Blob | Commit | bytes


def _line(stream: BinaryIO) -> bytes | None:
    raw = stream.readline()
    return raw.rstrip(b"\n") if raw else None


def _data(stream: BinaryIO, line: bytes) -> bytes:
    size = int(line[5:])
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("the export stream ended inside a data block")
    return data


def events(stream: BinaryIO) -> Iterator[Event]:
    """The commands of a fast-export stream: blobs, commits and tags parsed, every other line as it is."""
    while (line := _line(stream)) is not None:
        command = line.split(b" ", 1)[0]
        if command not in (b"blob", b"commit", b"tag"):
            yield line
            continue
        header = [line]
        while (part := _line(stream)) is not None and not part.startswith(b"data "):
            header.append(part)
        if part is None:
            raise ValueError("the export stream ended inside a command")
        data = _data(stream, part)
        if command == b"blob":
            yield Blob(header, data)
            continue
        changes = []
        # Its file changes (and from/merge) follow, up to a blank line. A message without a final
        # newline is followed by fast-import's optional one, which ends nothing.
        optional_lf = not data.endswith(b"\n")
        while (part := _line(stream)) is not None and (part != b"" or optional_lf):
            if part:
                changes.append(part)
            optional_lf = False
        yield Commit(header, data, changes)


def _unquote(path: bytes) -> str:
    if path.startswith(b'"') and path.endswith(b'"') and len(path) >= 2:
        inner = path[1:-1]
        with contextlib.suppress(UnicodeDecodeError, UnicodeEncodeError):
            inner = inner.decode("unicode_escape").encode("latin-1")
        path = inner
    return path.decode("utf-8", "replace")


def _modify(change: bytes) -> tuple[bytes, bytes] | None:
    """`M mode dataref path` → (dataref, path)."""
    if not change.startswith(b"M "):
        return None
    parts = change.split(b" ", 3)
    return (parts[2], parts[3]) if len(parts) == 4 else None


def survey(stream: Iterable[Event], erased: Callable[[str], bool]) -> Found:
    """First pass: the erased callers' keys, names and paths, for the messages of the second."""
    found = Found()
    marks: set[bytes] = set()
    for event in stream:
        if isinstance(event, Blob):
            key = key_of(event.data)
            if key is None or not erased(key):
                continue
            found.keys.add(key)
            if event.mark is not None:
                marks.add(event.mark)
            try:
                record = parse.parse_caller(event.data.decode("utf-8", "replace"))
            except parse.VaultFileError:
                continue
            found.names.update(name.strip() for name in (record.name, *record.aliases) if name.strip())
        elif isinstance(event, Commit):
            for change in event.changes:
                if (modified := _modify(change)) is not None and modified[0] in marks:
                    found.paths.add(_unquote(modified[1]))
    return found


def scrub_message(message: str, needles: list[str]) -> str:
    """`message` with every line that holds a needle replaced (a list item stays a list item)."""
    if not needles:
        return message
    lines = message.split("\n")
    for n, line in enumerate(lines):
        lowered = line.lower()
        if any(needle in lowered for needle in needles):
            bullet = line[: len(line) - len(line.lstrip(" -*"))]
            lines[n] = bullet + REPLACED
    return "\n".join(lines)


class Rewriting(msgspec.Struct):
    """The second pass's record: commits by mark with their original ids, and what was dropped."""

    originals: dict[str, str] = msgspec.field(default_factory=dict)  # ":N" -> original commit id
    dropped_blobs: int = 0
    dropped_changes: int = 0


def rewrite(
    stream: Iterable[Event], erased: Callable[[str], bool], found: Found, out: Callable[[bytes], object]
) -> Rewriting:
    """Second pass: write the stream to `out` without erased blobs, their file changes and names in messages."""
    needles = found.needles()
    record = Rewriting()
    marks: set[bytes] = set()
    for event in stream:
        if isinstance(event, bytes):
            if event:  # blank lines between commands: each command written here ends with its own
                out(event + b"\n")
            continue
        if isinstance(event, Blob):
            key = key_of(event.data)
            if key is not None and erased(key):
                if event.mark is not None:
                    marks.add(event.mark)
                record.dropped_blobs += 1
                continue
            out(b"\n".join(event.header) + b"\ndata %d\n" % len(event.data) + event.data + b"\n")
            continue
        kept = [change for change in event.changes if (m := _modify(change)) is None or m[0] not in marks]
        record.dropped_changes += len(event.changes) - len(kept)
        text = event.message.decode("utf-8", "surrogateescape")
        message = scrub_message(text, needles).encode("utf-8", "surrogateescape")
        mark, original = event.value(b"mark"), event.value(b"original-oid")
        if mark is not None and original is not None and event.header[0].startswith(b"commit "):
            record.originals[mark.decode()] = original.decode()
        # As fast-export writes it; a message without a final newline gets fast-import's optional one.
        lf = b"" if message.endswith(b"\n") else b"\n"
        out(b"\n".join(event.header) + b"\ndata %d\n" % len(message) + message + lf)
        out(b"".join(change + b"\n" for change in kept) + b"\n")
    return record
