"""Readable names on disk (SPEC §14): a service-named caller file takes its caller's name once it is known.

The write path calls this under its edit lock: the generated heading follows the name in the same
change, and the file moves to `callers/<Name>.md` before the commit, which records a git rename.
Writes that were on their way to the old path are sent to the new one (`current`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from server import changes, filenames
from server.index import Index
from server.markdown import Kind, kind_of
from server.parse import VaultFileError, split_frontmatter
from server.vault import Vault, digest

log = logging.getLogger("memory_bridge.renames")

# A change to a file's text, as the write path applies it (its `Change`).
Change = Callable[[str | None], str | None]
# Inside .git/: every rename the service made, one "old<TAB>new" line each, so that what looks a caller
# up by the file name the service gave it (a rerun of the legacy import) still finds it after a restart.
RENAMED_FILE = ".git/memory-bridge/renamed"


def name_in(text: str) -> str:
    """The `name` property of a caller file's text ("" if none, or if the file does not parse)."""
    try:
        meta, _ = split_frontmatter(text)
    except VaultFileError:
        return ""
    value = meta.get("name")
    return " ".join(value.split()) if isinstance(value, str) else ""


def key_in(text: str) -> str:
    """The `phone_hash` of a caller file's text ("" if none, or if the file does not parse)."""
    try:
        meta, _ = split_frontmatter(text)
    except VaultFileError:
        return ""
    return str(meta.get("phone_hash") or "").strip().lower()


class Renamer:
    """Gives service-named caller files their caller's name, and remembers where each went."""

    def __init__(self, vault: Vault, index: Index) -> None:
        self.vault = vault
        self.index = index
        self._moved: dict[str, tuple[str, str]] | None = None  # read from RENAMED_FILE when first needed

    @property
    def moved(self) -> dict[str, tuple[str, str]]:
        """Every rename the service made in this vault: old path -> (new path, the caller's key)."""
        if self._moved is None:
            self._moved = {}
            try:
                text = (self.vault.root / RENAMED_FILE).read_text(encoding="utf-8")
            except (FileNotFoundError, NotADirectoryError):
                text = ""
            for line in text.splitlines():
                old, new, key = [*line.split("\t"), "", ""][:3]
                if old and new:
                    self._moved[old] = (new, key)
        return self._moved

    def renamed(self, relpath: str) -> str:
        """Where the service last moved a file it once had at `relpath` (the path itself if never)."""
        seen = set()
        while relpath in self.moved and relpath not in seen:
            seen.add(relpath)
            relpath = self.moved[relpath][0]
        return relpath

    def current(self, relpath: str) -> str:
        """Where a write addressed to `relpath` goes: the new path of a file the service renamed, if the
        old one is gone and the new one still holds the same caller; else `relpath` itself."""
        target = self.renamed(relpath)
        if target == relpath or self.vault.stat(relpath) is not None:
            return relpath
        key = self.moved[relpath][1]
        return target if key and self.index.caller_path(key) == target else relpath

    @staticmethod
    def heading_follows(relpath: str, change: Change) -> Change:
        """`change`, with a caller file's generated heading replaced by the caller's name once it has one."""
        if kind_of(relpath) is not Kind.CALLER:
            return change

        def named(current: str | None) -> str | None:
            result = change(current)
            if result is None or not (name := name_in(result)):
                return result
            return changes.with_named_heading(result, name)

        return named

    def give_name(self, relpath: str, text: str, sha: str | None = None) -> str | None:
        """Move a service-named caller file whose text names the caller to `callers/<Name>.md`; its new path.

        None when it stays: not named by the service, no name, no free name, or the disk refused.
        `sha` is the digest of the file's bytes (by default, of `text` in UTF-8), so the watcher knows
        the moved file as this process's own write.
        """
        if not filenames.service_named(relpath) or not filenames.safe_name(name := name_in(text)):
            return None
        key = key_in(text)

        def taken(path: str) -> bool:
            # The index knows every file, without listing a folder of thousands on each rename; a
            # file made a moment ago and not indexed yet is seen on disk (`move` never overwrites).
            return self.index.path_taken(path) or self.vault.path(path).exists()

        target = filenames.readable_path(relpath, name, taken)
        if target is None:
            return None
        try:
            moved = self.vault.move(relpath, target, sha or digest(text.encode("utf-8")))
        except OSError:
            return None
        if not moved:
            return None
        self.moved[relpath] = (target, key)
        record = self.vault.root / RENAMED_FILE
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            with open(record, "a", encoding="utf-8") as fh:
                fh.write(f"{relpath}\t{target}\t{key}\n")
        except OSError as exc:  # the rename stands; only a later legacy import may not find the file
            log.warning("could not record the rename of %s: %s", relpath, exc)
        return target

    def name_hand_edit(self, relpath: str) -> str | None:
        """A person gave a service-named caller file a name: the heading follows and the file moves; its new path."""
        if not filenames.service_named(relpath):
            return None
        seen: list[str] = []

        def keep(current: str | None) -> str | None:
            if current is not None:
                seen.append(current)
            return current

        try:
            updated = self.vault.update(relpath, self.heading_follows(relpath, keep))
        except OSError:
            return None
        text = updated.text if updated is not None else (seen[-1] if seen else None)
        return None if text is None else self.give_name(relpath, text)
