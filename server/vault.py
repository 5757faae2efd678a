"""The vault on disk: the only module that reads or writes caller files, the soul and daily notes.

Parsing turns file text into the records of `server.records`. Writing is surgical: a change edits
the lines it is about (one frontmatter key, one appended list item) and leaves every other byte of a
hand-written file as it was, because PyYAML cannot round-trip comments, quoting or key order.
Writes are atomic (temporary file, then rename) and remembered by content hash, so the watcher can
tell the service's own writes from a person's.
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import yaml
from frontmatter.default_handlers import YAMLHandler

from server import text as text_rules
from server.phone import is_caller_key, short
from server.records import Caller, CallLine, DailyNote, Scalar, Soul

CALLERS = "callers"
NOTES = "notes"
SOUL = "soul.md"
KEY_FILE = "memory-bridge/phone-hash-key"  # inside .git/: local, never tracked, travels with the vault

# A file bigger than this is refused rather than parsed: a caller file is a few kilobytes.
MAX_FILE_BYTES = 1_000_000
# The service writes no file bigger than this: the rest is room for the few bytes recording a call
# adds to the frontmatter, so nothing it writes ever crosses the loader's limit.
MAX_WRITE_BYTES = MAX_FILE_BYTES - 50_000

_BUILTIN_KEYS = {
    "phone_hash",
    "name",
    "aliases",
    "call_count",
    "first_call",
    "last_call",
    "language",
    "voice_id",
    "first_message",
    "phone",
    "tags",
}
_NOTE_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.md$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LIST_ITEM = re.compile(r"^\s*[-*+]\s+(?:\[[ xX]\]\s+)?(.*)$")
_CALL = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:[ T](?P<time>\d{2}:\d{2}))?\s*(?:[·:\-–—|]\s*)?(?P<summary>.*?)"
    r"\s*(?:\((?P<conv>conv_[A-Za-z0-9_\-]+)\))?\s*$"
)
_FENCE = re.compile(r"^(---|\.\.\.)\s*$")
# YAML anchors and aliases never appear in Obsidian properties; refusing them defuses alias bombs.
_YAML_ALIAS = re.compile(r"(?:^|[\s\[{,:-])[&*][^\s,\[\]{}]+", re.MULTILINE)

_YAML = YAMLHandler()
_STARTER_SOUL = Path(__file__).with_name("templates") / "soul.md"
_VAULT_GITIGNORE = """\
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


class VaultFileError(ValueError):
    """A vault file that cannot be used as it is; the message says why, for `/health` and the log."""


class DiskError(OSError):
    """The vault's disk refused a write (full, read-only, failing); the message names no file or caller."""


def disk_error(exc: OSError) -> DiskError:
    """The `DiskError` for an OSError from the disk: what failed, in words safe for `/health` and logs."""
    return DiskError(f"cannot write to the vault: {exc.strerror or type(exc).__name__}")


class Loaded(msgspec.Struct, frozen=True):
    """The result of reading one vault file: a record, or an error, and the bytes' digest and stat."""

    relpath: str
    kind: str  # "caller" | "soul" | "note" | "other"
    digest: str
    stat: int  # signature() of the file's stat: changes whenever the file does
    record: Caller | Soul | DailyNote | None = None
    error: str | None = None
    parsed: bool = True  # False: read but not parsed, because the caller already knew these bytes


def digest(data: bytes) -> str:
    """Content hash used to recognise the service's own writes."""
    return hashlib.sha256(data).hexdigest()


def signature(st: os.stat_result) -> int:
    """What identifies one version of a file on disk without reading it (one int: 100k of them are kept)."""
    return hash((st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))


def kind_of(relpath: str) -> str:
    """Which kind of vault file a vault-relative path names, or "other" for files we ignore."""
    parts = relpath.split("/")
    name = parts[-1]
    if not name.endswith(".md") or any(p.startswith(".") for p in parts):
        return "other"
    if relpath == SOUL:
        return "soul"
    if parts[0] == CALLERS and len(parts) >= 2:
        return "caller"
    if parts[0] == NOTES and len(parts) == 2 and _NOTE_NAME.match(name):
        return "note"
    return "other"


# ---------------------------------------------------------------------------------------------
# Parsing (pure: text in, record out)


def split_frontmatter(text: str) -> tuple[dict[str, object], str]:
    """Split a file into its YAML frontmatter and body. Raises VaultFileError on broken YAML."""
    if not _YAML.detect(text):
        return {}, text
    try:
        block, body = _YAML.split(text)
    except ValueError:
        raise VaultFileError("the frontmatter has no closing '---' line") from None
    if _YAML_ALIAS.search(block) and _uses_alias(block):
        raise VaultFileError("the frontmatter uses YAML anchors or aliases, which vault files do not allow")
    try:
        meta = _YAML.load(block) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise VaultFileError(f"the frontmatter is not valid YAML{where}: {problem}") from None
    if not isinstance(meta, dict):
        raise VaultFileError("the frontmatter is not a set of key: value properties")
    return {str(k): v for k, v in meta.items()}, body


def _uses_alias(block: str) -> bool:
    # Cheap regex first; confirm with the scanner so a '*' inside a quoted string is not refused.
    try:
        for token in yaml.scan(block, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(token, yaml.AliasToken | yaml.AnchorToken):
                return True
    except yaml.YAMLError:
        return False
    return False


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _scalar(value: object) -> Scalar | None:
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str | dt.date):
        return _text(value)
    return None


def sections(body: str) -> dict[str, list[str]]:
    """The lines under each `##` heading, keyed by the heading's lowercased text."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in body.splitlines():
        heading = _HEADING.match(line)
        if heading and len(heading.group(1)) <= 2:
            current = found.setdefault(heading.group(2).lower(), []) if len(heading.group(1)) == 2 else None
            continue
        if current is not None:
            current.append(line)
    return found


def _items(lines: list[str]) -> tuple[str, ...]:
    out = []
    for line in lines:
        match = _LIST_ITEM.match(line)
        if match and match.group(1).strip():
            out.append(match.group(1).strip())
    return tuple(out)


def parse_call(item: str) -> CallLine:
    """Parse one `## Calls` item; lines a person wrote in another shape keep their text as summary."""
    match = _CALL.match(item)
    if not match:
        return CallLine(date="", summary=item)
    return CallLine(
        date=match.group("date"),
        summary=match.group("summary"),
        conversation_id=match.group("conv"),
        time=match.group("time"),
    )


def parse_caller(text: str) -> Caller:
    """Parse a caller file. Raises VaultFileError when it has no usable `phone_hash`."""
    meta, body = split_frontmatter(text)
    key = _text(meta.get("phone_hash")).lower()
    if not key:
        raise VaultFileError("the frontmatter has no phone_hash, so the file belongs to no caller")
    if not is_caller_key(key):
        raise VaultFileError("phone_hash is not 64 hexadecimal digits")
    aliases = meta.get("aliases")
    count = meta.get("call_count")
    extra = {k: v for k, v in ((k, _scalar(v)) for k, v in meta.items() if k not in _BUILTIN_KEYS)}
    parts = sections(body)
    notes = tuple(line.strip() for line in parts.get("notes", []) if line.strip())
    return Caller(
        phone_hash=key,
        name=_text(meta.get("name")),
        aliases=tuple(_text(a) for a in aliases if _text(a)) if isinstance(aliases, list) else (),
        call_count=count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0,
        first_call=_text(meta.get("first_call")),
        last_call=_text(meta.get("last_call")),
        language=_text(meta.get("language")) or None,
        voice_id=_text(meta.get("voice_id")) or None,
        first_message=_text(meta.get("first_message")) or None,
        extra={k: v for k, v in extra.items() if v is not None},
        facts=_items(parts.get("facts", [])),
        calls=tuple(parse_call(item) for item in _items(parts.get("calls", []))),
        notes=notes,
    )


def parse_soul(text: str) -> Soul:
    """Parse `soul.md`: the body is the prompt; frontmatter holds greetings and variable defaults."""
    meta, body = split_frontmatter(text)
    variables = {}
    for key, value in meta.items():
        if key in {"first_message", "first_message_returning"}:
            continue
        scalar = _scalar(value)
        variables[key] = "" if scalar is None else scalar
    return Soul(
        body=body.strip(),
        first_message=_text(meta.get("first_message")),
        first_message_returning=_text(meta.get("first_message_returning")),
        variables=variables,
    )


def parse_note(date: str, text: str) -> DailyNote:
    """Parse a daily note; its title line (`# 2026-11-25`), if any, is not part of what callers hear."""
    _, body = split_frontmatter(text)
    lines = body.strip().splitlines()
    if lines and lines[0].lstrip("#").strip() == date and lines[0].startswith("#"):
        lines = lines[1:]
    return DailyNote(date=date, body="\n".join(lines).strip())


def parse(relpath: str, data: bytes) -> Caller | Soul | DailyNote:
    """Parse a vault file of any kind from its bytes."""
    if b"\x00" in data[:8192]:
        raise VaultFileError("the file is binary, not markdown")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise VaultFileError("the file is not UTF-8 text") from None
    kind = kind_of(relpath)
    if kind == "caller":
        return parse_caller(text)
    if kind == "soul":
        return parse_soul(text)
    if kind == "note":
        return parse_note(relpath.split("/")[-1][:-3], text)
    raise VaultFileError("not a vault file")


# ---------------------------------------------------------------------------------------------
# Editing (pure: text in, text out, touching only the lines the change is about)


def yaml_scalar(value: object) -> str:
    """Render a value as an Obsidian-friendly YAML scalar, quoted whenever YAML would misread it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value)
    if not text or is_caller_key(text):
        return f'"{text}"'  # an empty string, or a hash YAML could read as a number
    if text.splitlines() != [text]:  # any line break: \n, \r, and also \x85, \u2028 and the like
        text = " ".join(text.split())
    rendered: str = yaml.safe_dump(text, allow_unicode=True, width=1_000_000, default_flow_style=True)
    # A plain scalar is followed by the document-end line "..."; drop that line, not a value's own "...".
    return rendered.removesuffix("\n").removesuffix("\n...").rstrip("\n")


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text[:4096] else "\n"


def _render_entry(key: str, value: object, nl: str) -> list[str]:
    if isinstance(value, list | tuple):
        if not value:
            return [f"{key}: []{nl}"]
        return [f"{key}:{nl}"] + [f"  - {yaml_scalar(v)}{nl}" for v in value]
    return [f"{key}: {yaml_scalar(value)}{nl}"]


def set_properties(text: str, changes: dict[str, object]) -> str:
    """Set frontmatter keys, rewriting only each key's own lines; new keys go at the end of the block."""
    nl = _newline(text)
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n").strip() != "---":
        head = [f"---{nl}"]
        for key, value in changes.items():
            head += _render_entry(key, value, nl)
        return "".join([*head, f"---{nl}"]) + text
    end = next((i for i in range(1, len(lines)) if _FENCE.match(lines[i].rstrip("\r\n"))), None)
    if end is None:
        raise VaultFileError("the frontmatter has no closing '---' line")
    block = lines[1:end]
    for key, value in changes.items():
        own = re.compile(rf"""^(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*:""")  # bare or quoted key
        start = next((i for i, line in enumerate(block) if own.match(line)), None)
        rendered = _render_entry(key, value, nl)
        if start is None:
            if block and not block[-1].endswith(("\n", "\r")):
                block[-1] += nl
            block += rendered
            continue
        stop = start + 1
        # The entry's own lines: indented continuations and block-list items.
        while stop < len(block) and (block[stop][:1] in {" ", "\t"} or block[stop].startswith("- ")):
            stop += 1
        block[start:stop] = rendered
    return "".join([lines[0], *block, *lines[end:]])


def append_to_section(text: str, section: str, line: str) -> str:
    """Append `line` to the `## section` (created at the end of the file if missing)."""
    nl = _newline(text)
    lines = text.splitlines(keepends=True)
    body_start = 0
    if lines and lines[0].rstrip("\r\n").strip() == "---":
        body_start = next((i + 1 for i in range(1, len(lines)) if _FENCE.match(lines[i].rstrip("\r\n"))), len(lines))
    heading_at = None
    for i in range(body_start, len(lines)):
        match = _HEADING.match(lines[i].rstrip("\r\n"))
        if match and len(match.group(1)) == 2 and match.group(2).lower() == section.lower():
            heading_at = i
            break
    if heading_at is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += nl
        gap = [nl] if lines and lines[-1].strip() else []
        return "".join([*lines, *gap, f"## {section}{nl}", f"{line}{nl}"])
    end = len(lines)
    for i in range(heading_at + 1, len(lines)):
        match = _HEADING.match(lines[i].rstrip("\r\n"))
        if match and len(match.group(1)) <= 2:
            end = i
            break
    last = heading_at
    for i in range(heading_at + 1, end):
        if lines[i].strip():
            last = i
    if not lines[last].endswith(("\n", "\r")):
        lines[last] += nl
    return "".join([*lines[: last + 1], f"{line}{nl}", *lines[last + 1 :]])


def one_line(text: str) -> str:
    """Text as it may enter the vault: one line, no control characters (see `server.text`)."""
    return text_rules.one_line(text)


def new_caller_text(
    phone_hash: str, name: str = "", phone: str | None = None, calls: tuple[str, str] | None = None
) -> str:
    """A new caller's file, in the layout of SPEC §2. `calls` is (first_call, last_call), if known."""
    props: dict[str, object] = {"phone_hash": phone_hash, "name": name, "aliases": [name] if name else []}
    if phone:
        props["phone"] = phone
    props["call_count"] = 0
    if calls is not None:
        props.update({"first_call": dt.date.fromisoformat(calls[0]), "last_call": dt.date.fromisoformat(calls[1])})
    head = "".join(line for key, value in props.items() for line in _render_entry(key, value, "\n"))
    title = name or f"Caller {short(phone_hash)}"
    return f"---\n{head}---\n# {one_line(title)}\n\n## Facts\n\n## Calls\n\n## Notes\n"


# ---------------------------------------------------------------------------------------------
# The vault on disk


class Vault:
    """A vault directory: lists, reads and atomically writes its files."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # relpath -> digest of the bytes this process last wrote there (its own writes).
        self._written: dict[str, str] = {}
        # relpath -> stat signature of a file the worker process wrote for this one (see note_own_write).
        self._written_stat: dict[str, int] = {}
        # Files the worker process is rewriting for this one right now: whatever is on disk there
        # is in flux until the write path takes the worker's answer.
        self._claimed: set[str] = set()
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
            self.write_text(SOUL, _STARTER_SOUL.read_text(encoding="utf-8"))
            created.append(SOUL)
        if not (self.root / ".gitignore").exists():
            self.write_text(".gitignore", _VAULT_GITIGNORE)
            created.append(".gitignore")
        return created

    def remove_stale_temp_files(self) -> int:
        """Delete temporary files an interrupted write left behind; they are never taken for data."""
        removed = 0
        for folder in (self.root, self.root / CALLERS, self.root / NOTES):
            if folder.is_dir():
                for path in folder.glob(".*.mb.tmp"):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def phone_hash_key(self, configured: str | None) -> tuple[bytes, bool]:
        """The HMAC key for caller keys: the configured one, else a local one (created on first use).

        Returns the key and whether it was generated here (the caller should warn).
        """
        if configured:
            return configured.encode(), False
        path = self.root / ".git" / KEY_FILE
        if path.is_file():
            return path.read_text(encoding="ascii").strip().encode(), True
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key + "\n")
        return key.encode(), True

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
        yield from walk(NOTES, False, lambda name: _NOTE_NAME.match(name) is not None)

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

    def forget_own_write(self, relpath: str) -> None:
        """Stop recognising the bytes this process last wrote to `relpath` as its own."""
        self._written.pop(relpath, None)
        self._written_stat.pop(relpath, None)

    def note_own_write(self, relpath: str, sha: str, stat: int) -> None:
        """Recognise these bytes at `relpath`, and the file with this stat signature, as this process's own.

        The worker process wrote them for this one, by renaming a new file into place, and took the
        stat right after: a later change of the file, by anyone, has another inode or timestamp.
        """
        self._written[relpath] = sha
        self._written_stat[relpath] = stat

    def is_own_file(self, relpath: str) -> bool:
        """Whether the file is, by its stat signature alone, the one the worker last wrote for this process."""
        known = self._written_stat.get(relpath)
        return known is not None and known == self.stat(relpath)

    def claim(self, relpaths: list[str]) -> None:
        """Mark files the worker process is about to rewrite; `is_claimed` until `release`."""
        self._claimed.update(relpaths)

    def release(self, relpaths: list[str]) -> None:
        """The worker is done with these files."""
        self._claimed.difference_update(relpaths)

    def is_claimed(self, relpath: str) -> bool:
        """Whether the worker process is rewriting this file right now."""
        return relpath in self._claimed

    def is_own_write(self, relpath: str, sha: str) -> bool:
        """Whether these bytes are exactly what this process last wrote to `relpath`."""
        return self._written.get(relpath) == sha

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
            path.parent.mkdir(parents=True, exist_ok=True)
            self._written[relpath] = sha
            self._written_stat.pop(relpath, None)
            tmp = self._temp(path, data)
            try:
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise self._failed(exc) from None
        self.disk_error = None
        return sha

    def _failed(self, exc: OSError) -> DiskError:
        error = disk_error(exc)
        self.disk_error = str(error)
        return error

    @staticmethod
    def _temp(path: Path, data: bytes) -> Path:
        # No fsync: the rename is atomic against a crashed process, which is the failure that
        # matters here; git does not fsync its objects by default either.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.mb.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
        except OSError:
            # A full or failing disk: the file may exist, empty or half-written; it must not stay.
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def update(self, relpath: str, change: Callable[[str | None], str | None]) -> tuple[str, str] | None:
        """Apply `change` to a file's current text (None if it does not exist) and write the result.

        Returns (new text, digest), or None when there was nothing to change. A person may be
        editing the same file: the write only replaces the exact version `change` saw, and an
        append that lands on that version during the swap is noticed and `change` is re-applied on
        top of it, so a hand edit is never overwritten.
        """
        path = self.path(relpath)
        try:
            result = self._update(path, relpath, change)
        except OSError as exc:
            raise self._failed(exc) from None
        if result is None:
            return None
        self.disk_error = None
        return result.text, result.digest

    def update_from(self, relpath: str, change: Callable[[str | None], str | None]) -> Updated | None:
        """`update`, also telling which bytes the change was made on (for a commit of exactly this change)."""
        path = self.path(relpath)
        try:
            result = self._update(path, relpath, change)
        except OSError as exc:
            raise self._failed(exc) from None
        if result is not None:
            self.disk_error = None
        return result

    def _update(self, path: Path, relpath: str, change: Callable[[str | None], str | None]) -> Updated | None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            try:
                fh = open(path, "rb")  # noqa: SIM115 - held open across the swap, closed below
            except FileNotFoundError:
                fh = None
            try:
                seen = os.fstat(fh.fileno()) if fh else None
                raw = fh.read() if fh else b""
                bom = codecs.BOM_UTF8 if raw.startswith(codecs.BOM_UTF8) else b""  # kept, like every other byte
                current = raw.decode("utf-8-sig") if fh else None
                updated = change(current)
                if updated is None or updated == current:
                    return None
                data = bom + updated.encode("utf-8")
                tmp = self._temp(path, data)
                # Kept in a local too: the watcher may drop the bookkeeping entry once it has seen the file.
                sha = digest(data)
                self._written[relpath] = sha
                self._written_stat.pop(relpath, None)
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
                        back = self._temp(path, fh.read())
                        try:
                            os.replace(back, path)
                        finally:
                            back.unlink(missing_ok=True)
                        continue
                return Updated(updated, sha, raw if fh else None, data)
            finally:
                if fh:
                    fh.close()
        raise VaultFileError("the file kept changing while it was being written; try again")

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
        self.forget_own_write(relpath)
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

    def new_caller_path(self, phone_hash: str) -> str:
        """Where a new caller's file goes: `callers/<first 12 hex digits>.md`."""
        return f"{CALLERS}/{short(phone_hash)}.md"

    def count_calls(self, job: CallsToRecord) -> Recorded:
        """Count a caller's answered calls in their file (created if new): call_count, first/last_call.

        The one write described as data rather than as a function, so that the worker process can
        make it. The file is parsed once; the new record is derived from that parse, since only
        these keys change.
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
            result = self.update_from(job.relpath, change)
        except _FileGone:
            return Recorded(job.relpath, gone=True)
        except VaultFileError as exc:
            return Recorded(job.relpath, error=str(exc))
        except DiskError as exc:
            return Recorded(job.relpath, error=str(exc), disk_error=True)
        if result is None:
            return Recorded(job.relpath)
        text = result.text
        record = derived[-1][1] if derived[-1][0] == text else parse_caller(text)
        stat = self.stat(job.relpath) or 0
        return Recorded(job.relpath, result.digest, stat, record, base=result.base, data=result.data)

    @staticmethod
    def note_path(date: str) -> str:
        """The daily note file of a date (`notes/YYYY-MM-DD.md`, Obsidian's default)."""
        return f"{NOTES}/{date}.md"


# ---------------------------------------------------------------------------------------------
# Recorded calls, as data: the worker process's side of `Vault.count_calls`


class CallsToRecord(msgspec.Struct, frozen=True, array_like=True):
    """One caller's answered calls, to be counted in their file (in the worker process, or in process)."""

    relpath: str
    key: str
    calls: int
    today: str
    phone: str | None  # the number to keep in the file (STORE_PHONE_NUMBERS), else None
    create: bool  # a new caller: create the file; else it must still be there


class Updated(msgspec.Struct, frozen=True):
    """One change written to a file: the new text and its digest, and the bytes before and after."""

    text: str
    digest: str
    base: bytes | None  # the file's bytes the change was made on; None: it did not exist
    data: bytes  # the bytes written


class Recorded(msgspec.Struct, frozen=True, array_like=True):
    """What counting one caller's calls did: the file's new digest, stat and record, or an error."""

    relpath: str
    digest: str | None = None  # None: nothing was written
    stat: int = 0
    record: Caller | None = None
    error: str | None = None
    gone: bool = False  # the caller's file was moved or removed since the index saw it
    disk_error: bool = False  # the disk refused the write (`error` says how): the calls wait to be tried again
    base: bytes | None = None  # the bytes the change was made on (None: none, or not known)
    data: bytes | None = None  # the bytes written, to commit exactly this change (None: not known)


class _FileGone(Exception):
    pass


_jobs_decoder = msgspec.msgpack.Decoder(list[CallsToRecord])
_results_encoder = msgspec.msgpack.Encoder()


def count_calls_batch(root: str, jobs: bytes) -> bytes:
    """`Vault.count_calls` for a batch of jobs in the vault at `root`; msgpack in and out (the worker's op)."""
    vault = Vault(Path(root))
    return _results_encoder.encode([vault.count_calls(job) for job in _jobs_decoder.decode(jobs)])
