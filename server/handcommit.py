"""A person's files just before their commit (SPEC §14): a caller's `phone:` keyed, a service-named file named.

The write path runs these on every path that commits a person's edit, under its hold on the files.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from server.addbyphone import Keyed, PhoneKeyer
from server.gitwriter import GitWriter
from server.index import Index
from server.markdown import Kind, kind_of
from server.renames import Renamer
from server.vault import Vault


class PersonsEdits:
    """What happens to a person's files before they are committed as theirs."""

    def __init__(
        self,
        vault: Vault,
        index: Index,
        git: GitWriter,
        names: Renamer,
        passing: Callable[[], contextlib.AbstractAsyncContextManager[None]],
        editing: Callable[[], contextlib.AbstractAsyncContextManager[None]],
    ) -> None:
        self.vault = vault
        self.index = index
        self.git = git
        self.names = names
        # The write path's gate (closed while a merge rewrites files) and its edit lock.
        self.passing = passing
        self.editing = editing
        # Keys a person's caller file made from a `phone:` (set by `Memory`, which has the key).
        self.phones: PhoneKeyer | None = None

    async def committable(self, relpaths: list[str]) -> list[str]:
        """The files that may be committed, a caller's `phone:` keyed and removed first.

        A file whose `phone:` is no usable number stays uncommitted (its number never reaches history).
        """
        if self.phones is None or not any(kind_of(path) is Kind.CALLER for path in relpaths):
            return relpaths
        phones = self.phones
        async with self.passing(), self.editing():
            done = await asyncio.to_thread(phones.key_files, relpaths)
        for relpath, outcome in done.items():
            if outcome is Keyed.REFUSED:
                self.git.hand_edits.discard(relpath)
            elif outcome is Keyed.KEYED:
                await self._index(relpath)  # our own write now: the watcher leaves it to us
        return [relpath for relpath in relpaths if done[relpath] is not Keyed.REFUSED]

    async def named(self, edits: dict[str, str]) -> dict[str, str]:
        """`edits` (path -> "edited"/"removed") after each service-named caller file a person named took the name."""
        edits = dict(edits)
        for path in [path for path, what in edits.items() if what == "edited" and kind_of(path) is Kind.CALLER]:
            async with self.passing(), self.editing():
                target = await asyncio.to_thread(self.names.name_hand_edit, path)
            if target is not None:
                edits[path], edits[target] = "removed", "edited"
                self.index.apply(path, None, self.vault.next_seq())
                await self._index(target)
        return edits

    async def _index(self, relpath: str) -> None:
        loaded = await asyncio.to_thread(self.vault.load, relpath)
        if loaded is not None:
            self.index.apply(relpath, loaded, self.vault.next_seq())
