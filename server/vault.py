"""The vault on disk: lists, reads and atomically writes caller files, the soul and daily notes.

The only module that touches the vault's files (the key file and the derived cache in `.git/`
have their own). Reading hands bytes to `server.parse`; writing applies a change made by
`server.edits` to the exact version of the file it was made on, atomically (temporary file, then
rename), and records the bytes in `OwnWrites`, so the watcher can tell the service's own writes
from a person's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from server import atomic
from server.conflicts import found_in
from server.markdown import CALLERS, NOTE_NAME, NOTES, SOUL, SOULS, Kind, kind_of
from server.ownwrites import OwnWrites
from server.parse import MAX_FILE_BYTES, VaultFileError, parse
from server.phone import short
from server.records import Caller, DailyNote, Soul

# The service writes no file bigger than this: the rest is room for the few bytes recording a call
# adds to the frontmatter, so nothing it writes ever crosses the loader's limit.
MAX_WRITE_BYTES = MAX_FILE_BYTES - 50_000

STARTER_SOUL = Path(__file__).with_name("templates") / "soul.md"
VAULT_GITIGNORE = """\
# Obsidian's per-device state: every click would otherwise become a commit.
.obsidian/workspace*.json
.obsidian/cache
.trash/
# Temporary files of editors and of memory-bridge's atomic writes.
.*.tmp
*.tmp
*.swp
*~
.DS_Store
"""


class DiskError(OSError):
    """The vault's disk refused a write (full, read-only, failing); the message names no file or caller."""


def disk_error(exc: OSError) -> DiskError:
    """The `DiskError` for an OSError from the disk: what failed, in words safe for `/health` and logs."""
    return DiskError(f"cannot write to the vault: {exc.strerror or type(exc).__name__}")


class Loaded(msgspec.Struct, frozen=True):
    """The result of reading one vault file: a record, or an error, and the bytes' digest and stat."""

    relpath: str
    kind: Kind
    digest: str
    stat: int  # signature() of the file's stat: changes whenever the file does
    record: Caller | Soul | DailyNote | None = None
    error: str | None = None
    parsed: bool = True  # False: read but not parsed, because the caller already knew these bytes


def digest(data: bytes) -> str:
    """Content hash used to recognise the service's own writes and changed files.

    128 bits are plenty to tell versions of one file apart, and the index keeps one per file: a
    32-character string each costs 3 MB less per 100,000 files than SHA-256's 64.
    """
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def signature(st: os.stat_result) -> int:
    """What identifies one version of a file on disk without reading it (one int: 100k of them are kept)."""
    return hash((st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))


# ---------------------------------------------------------------------------------------------
# The vault on disk


class Vault:
    """A vault directory: lists, reads and atomically writes its files."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # Which files hold this process's own writes (and which the worker is rewriting for it).
        self.own = OwnWrites()
        self._seq = 0
        # What the disk said when the last write failed; None once a write succeeds (shown on /health).
        self.disk_error: str | None = None

    # -- layout --------------------------------------------------------------------------------

    def ensure_layout(self) -> list[str]:
        """Create the vault's folders, starter soul and .gitignore if missing; return what was created."""
        created = []
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in (CALLERS, NOTES):
            (self.root / folder).mkdir(exist_ok=True)
            keep = self.root / folder / ".gitkeep"
            if not any((self.root / folder).iterdir()):
                keep.touch()
                created.append(f"{folder}/.gitkeep")
        if not (self.root / SOUL).exists():
            self.write_text(SOUL, STARTER_SOUL.read_text(encoding="utf-8"))
            created.append(SOUL)
        if not (self.root / ".gitignore").exists():
            self.write_text(".gitignore", VAULT_GITIGNORE)
            created.append(".gitignore")
        return created

    def remove_stale_temp_files(self) -> int:
        """Delete temporary files an interrupted write left behind; they are never taken for data."""
        removed = 0
        for folder in (self.root, self.root / CALLERS, self.root / NOTES):
            try:
                # A plain listing: a glob matches a pattern against each of a thousand callers' names.
                with os.scandir(folder) as entries:
                    leftovers = [Path(e.path) for e in entries if e.name[0] == "." and e.name.endswith(".mb.tmp")]
            except (FileNotFoundError, NotADirectoryError):
                continue
            for path in leftovers:
                if atomic.is_leftover(path):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- reading -------------------------------------------------------------------------------

    def relpath(self, path: Path | str) -> str | None:
        """The vault-relative POSIX path of `path`, or None if it lies outside the vault."""
        try:
            # normpath, not resolve: a symlink inside the vault is reported as itself, never followed.
            return Path(os.path.normpath(os.path.abspath(path))).relative_to(self.root).as_posix()
        except ValueError:
            return None

    def path(self, relpath: str) -> Path:
        """The absolute path of a vault-relative path; refuses anything that escapes the vault."""
        candidate = (self.root / relpath).resolve(strict=False)
        if candidate != self.root and self.root not in candidate.parents:
            raise VaultFileError("path is outside the vault")
        return candidate

    def walk(self) -> Iterator[tuple[str, int]]:
        """Every vault file the index cares about, with its stat signature, in directory order.

        Never follows symlinks (a link is listed as itself, and reported when it is loaded).
        """
        root = str(self.root)

        def walk(folder: str, nested: bool, wanted: Callable[[str], bool]) -> Iterator[tuple[str, int]]:
            try:
                entries = os.scandir(os.path.join(root, folder))
            except OSError:
                return
            with entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if nested:
                                yield from walk(f"{folder}/{name}", nested, wanted)
                        elif wanted(name):
                            yield f"{folder}/{name}", signature(entry.stat(follow_symlinks=False))
                    except OSError:
                        continue  # gone while we looked: the watcher hears of it

        if (soul := self.stat(SOUL)) is not None:
            yield SOUL, soul
        # The same rules as kind_of(), per folder: callers at any depth, daily notes at the top.
        yield from walk(CALLERS, True, lambda name: name.endswith(".md"))
        yield from walk(NOTES, False, lambda name: NOTE_NAME.match(name) is not None)
        yield from walk(SOULS, False, lambda name: name.endswith(".md"))

    def scan(self) -> dict[str, int]:
        """`walk()` as a dict sorted by path, so that start-up is deterministic."""
        return dict(sorted(self.walk()))

    def next_seq(self) -> int:
        """A number that orders reads and writes, so an older result never replaces a newer one."""
        self._seq += 1
        return self._seq

    def load(self, relpath: str, unless: Callable[[str], bool] | None = None) -> Loaded | None:
        """Read and parse one file. None means it does not exist; a read or parse failure is an error.

        A symlink, an oversized or unreadable file is reported, never followed or taken for a deletion.
        If `unless(digest)` is true, the bytes are not parsed (the result has `parsed=False`).
        """
        kind = kind_of(relpath)
        path = self.root / relpath
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return Loaded(relpath, kind, "", 0, error=f"cannot be read: {exc.strerror}")
        stat = signature(st)
        if not os.path.isfile(path) or os.path.islink(path):
            return Loaded(relpath, kind, "", stat, error="is a link or not a regular file; not followed")
        if st.st_size > MAX_FILE_BYTES:
            return Loaded(relpath, kind, "", stat, error=f"is {st.st_size} bytes, over the 1 MB limit")
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return Loaded(relpath, kind, "", stat, error=f"cannot be read: {exc.strerror}")
        sha = digest(data)
        if unless is not None and unless(sha):
            return Loaded(relpath, kind, sha, stat, parsed=False)
        try:
            record = parse(relpath, data)
        except VaultFileError as exc:
            return Loaded(relpath, kind, sha, stat, error=str(exc))
        return Loaded(relpath, kind, sha, stat, record=record)

    def stat(self, relpath: str) -> int | None:
        """The stat signature of a file without following links, or None if it is missing."""
        try:
            return signature(os.lstat(self.root / relpath))
        except OSError:
            return None

    def digest_of(self, relpath: str) -> str | None:
        """The content hash of a file as it is on disk now, or None if it is missing or unreadable."""
        try:
            with open(self.root / relpath, "rb") as fh:
                return digest(fh.read(MAX_FILE_BYTES + 1))
        except OSError:
            return None

    def conflicted(self, relpath: str) -> bool:
        """Whether a vault file on disk holds git's conflict markers (never committed by the service)."""
        if kind_of(relpath) is Kind.OTHER:
            return False
        try:
            with open(self.root / relpath, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError:
            return False
        return found_in(data)

    # -- writing -------------------------------------------------------------------------------

    def note_disk(self, error: str | None) -> None:
        """Record the outcome of a write made elsewhere (the worker process): its disk error, or None."""
        self.disk_error = error

    def write_text(self, relpath: str, text: str) -> str:
        """Atomically replace (or create) a file; returns the digest of what was written.

        Raises DiskError when the disk refuses the write; no temporary file is left behind.
        """
        path = self.path(relpath)
        data = text.encode("utf-8")
        sha = digest(data)
        try:
            self.own.wrote(relpath, sha)
            atomic.replace(path, data)
        except OSError as exc:
            raise self._failed(exc) from None
        self.disk_error = None
        return sha

    def _failed(self, exc: OSError) -> DiskError:
        error = disk_error(exc)
        self.disk_error = str(error)
        return error

    def update(self, relpath: str, change: Callable[[str | None], str | None]) -> Updated | None:
        """Apply `change` to a file's current text (None if it does not exist) and write the result.

        Returns what was written and the bytes it was made on (for a commit of exactly this change),
        or None when there was nothing to change. A person may be editing the same file: the write
        only replaces the exact version `change` saw, and an append that lands on that version during
        the swap is noticed and `change` is re-applied on top of it, so a hand edit is never overwritten.
        """
        path = self.path(relpath)

        def mine(data: bytes) -> None:
            self.own.wrote(relpath, digest(data))

        try:
            swapped = atomic.swap(path, change, mine)
        except OSError as exc:
            raise self._failed(exc) from None
        if swapped is None:
            return None
        self.disk_error = None
        # The digest is taken from the bytes, not from `own`: the watcher may drop that entry once it has seen the file.
        return Updated(swapped.text, digest(swapped.data), swapped.base, swapped.data)

    def loaded(self, relpath: str, text: str, sha: str, record: Caller | None = None) -> Loaded:
        """The index entry for text this process just wrote, without reading it back.

        `record`, if given, is what parsing `text` would give (the writer derived it); it is not parsed.
        """
        try:
            stat = signature(os.lstat(self.root / relpath))
        except FileNotFoundError:
            stat = 0
        if record is not None:
            return Loaded(relpath, kind_of(relpath), sha, stat, record=record)
        try:
            parsed = parse(relpath, text.encode("utf-8"))
        except VaultFileError as exc:
            return Loaded(relpath, kind_of(relpath), sha, stat, error=str(exc))
        return Loaded(relpath, kind_of(relpath), sha, stat, record=parsed)

    def delete(self, relpath: str) -> bytes | None:
        """Remove a file from the vault; returns the bytes it held (None: it was not there).

        Raises DiskError when the disk refuses.
        """
        self.own.forget(relpath)
        path = self.path(relpath)
        try:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._failed(exc) from None
        return data

    def move(self, relpath: str, target: str, sha: str) -> bool:
        """Move a file to a path no file holds (compared as the disk does); False if `target` is taken.

        `sha` is the digest of the bytes moved: the watcher knows the new file as this process's write.
        """
        source, destination = self.path(relpath), self.path(target)
        self.own.wrote(target, sha)
        try:
            os.link(source, destination)  # never over another file, even one made a moment ago
        except FileExistsError:
            self.own.forget(target)
            return False
        except OSError:
            if destination.exists():
                self.own.forget(target)
                return False
            os.rename(source, destination)  # a disk without hard links
            self.own.moved_away(relpath)
            return True
        os.unlink(source)
        self.own.moved_away(relpath)
        return True

    def new_caller_path(self, phone_hash: str) -> str:
        """Where a new caller's file goes: `callers/<first 12 hex digits>.md`."""
        return f"{CALLERS}/{short(phone_hash)}.md"

    @staticmethod
    def note_path(date: str) -> str:
        """The daily note file of a date (`notes/YYYY-MM-DD.md`, Obsidian's default)."""
        return f"{NOTES}/{date}.md"


class Updated(msgspec.Struct, frozen=True):
    """One change written to a file: the new text and its digest, and the bytes before and after."""

    text: str
    digest: str
    base: bytes | None  # the file's bytes the change was made on; None: it did not exist
    data: bytes  # the bytes written
