"""Readable caller file names (SPEC §14): a name made safe for every file system, and the next free one. Pure.

Only a file the service named (`callers/<12 hex digits>.md`) is ever renamed: a name a person gave
a file is theirs. Names are compared without regard to case, as macOS and Windows disks do.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from server.markdown import CALLERS

# The file name a new caller's file gets: the first 12 hex digits of its key.
_SERVICE_NAMED = re.compile(rf"^{CALLERS}/[0-9a-f]{{12}}\.md$")
# Characters no file system, Obsidian link or shell should meet in a name: path separators, Windows'
# reserved ones, and Obsidian's link syntax.
_UNSAFE = re.compile(r'[/\\:*?"<>|#^\[\]%]')
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
# Room for " 999.md" and the folder within the 255 bytes most file systems allow a name.
MAX_NAME_BYTES = 120


def service_named(relpath: str) -> bool:
    """Whether the service named this caller file (so it may give it the caller's name)."""
    return _SERVICE_NAMED.match(relpath) is not None


def safe_name(name: str) -> str:
    """`name` as a file name's stem: one line, no separators or reserved characters, no leading dot,
    bounded in bytes; "" when nothing usable is left."""
    text = unicodedata.normalize("NFC", name)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = " ".join(_UNSAFE.sub(" ", text).split())
    text = text.lstrip(". ").rstrip(". ")
    encoded = text.encode("utf-8")[:MAX_NAME_BYTES]
    text = encoded.decode("utf-8", errors="ignore").rstrip(". ")
    if _WINDOWS_RESERVED.match(text):
        text = f"{text} (caller)"
    return text


def readable_path(relpath: str, name: str, taken: Callable[[str], bool]) -> str | None:
    """Where a service-named caller file goes once `name` is known; None to leave it where it is.

    `taken(path)` says whether a path is in use (compared without case). A second Maria Lopez gets
    `Maria Lopez 2.md`, and so on.
    """
    if not service_named(relpath):
        return None
    stem = safe_name(name)
    if not stem:
        return None
    folder = relpath.rsplit("/", 1)[0]
    for n in range(1, 1000):
        candidate = f"{folder}/{stem}.md" if n == 1 else f"{folder}/{stem} {n}.md"
        if not taken(candidate):
            return candidate
    return None
