"""Add by phone (SPEC §14): a caller file a person made with a `phone:` is keyed, the number removed, before any commit.

Every path that commits a person's edit calls `PhoneKeyer.key_file` first: the watcher's commits
(also after the reconcile scan and after a sync merge rewrote a file), a write's "commit the
person's edit first", and the start-up commit of edits made while no server ran.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from server import changes
from server.markdown import Kind, kind_of
from server.phone import CallerId
from server.vault import Vault

log = logging.getLogger("memory_bridge.addbyphone")

# A typed number to its caller key (None: not a usable phone number) and what it turned out to be.
Keying = Callable[[str], tuple[str | None, CallerId]]


class Keyed(enum.Enum):
    """What `key_file` did with one file."""

    NOTHING = "nothing"  # not a caller file, or no number in it
    KEYED = "keyed"  # `phone_hash` filled in and the number removed (or kept in E.164)
    REFUSED = "refused"  # a number that is no usable phone number, in a file with no `phone_hash`: not committed


class PhoneKeyer:
    """Turns a person's `phone:` into the caller's key in their file, on disk, before a commit."""

    def __init__(self, vault: Vault, keying: Keying, store_numbers: bool) -> None:
        self.vault = vault
        self.keying = keying
        self.store_numbers = store_numbers

    def key_file(self, relpath: str) -> Keyed:
        """Key one file in place if it holds a number; its outcome. Replaces only the version it read."""
        if kind_of(relpath) is not Kind.CALLER:
            return Keyed.NOTHING
        outcome = Keyed.NOTHING

        def change(current: str | None) -> str | None:
            nonlocal outcome
            outcome = Keyed.NOTHING
            typed = changes.typed_phone(current) if current is not None else None
            if current is None or typed is None:
                return None
            keyed = changes.has_phone_hash(current)
            key, caller_id = self.keying(typed)
            if key is None and not keyed:
                outcome = Keyed.REFUSED
                return None
            e164 = caller_id.e164 if self.store_numbers and key is not None else None
            if keyed and e164 is not None and typed == e164:
                return None  # a number kept as STORE_PHONE_NUMBERS keeps it: nothing to do
            outcome = Keyed.KEYED
            try:
                return changes.with_phone_keyed(current, None if keyed else key, e164)
            except ValueError:  # an unclosed frontmatter: the parser reports it, nothing is committed of it
                outcome = Keyed.REFUSED
                return None

        try:
            updated = self.vault.update(relpath, change)
        except OSError as exc:
            log.warning("%s: could not key the caller file: %s", relpath, exc)
            return Keyed.REFUSED
        if outcome is Keyed.REFUSED:
            log.warning("%s: its phone: is not a usable phone number; not committed until it is", relpath)
        return outcome if updated is not None or outcome is Keyed.REFUSED else Keyed.NOTHING

    def key_files(self, relpaths: list[str]) -> dict[str, Keyed]:
        """Key each file; what was done with each."""
        return {relpath: self.key_file(relpath) for relpath in relpaths}
