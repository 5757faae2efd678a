"""Finding callers the way a person names them (SPEC §14): number, key, short key or name; listing, searching. Pure.

Reads only the index (and the phone-number rules of `Identities`); the command line prints what it finds.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator

import msgspec

from server.identity import Identities
from server.index import Index
from server.records import Caller

# A short key: the first hex digits of a caller key, as commit messages and file names show them.
_SHORT_KEY = re.compile(r"[0-9a-f]{6,63}")


class Lookup(enum.Enum):
    """What a name given on the command line turned out to be."""

    FOUND = "found"
    UNKNOWN = "unknown"
    AMBIGUOUS = "ambiguous"  # more than one caller answers to it: a person must say which


class Match(msgspec.Struct, frozen=True):
    """The outcome of `find`: the key when FOUND, the candidates when AMBIGUOUS."""

    outcome: Lookup
    keys: tuple[str, ...] = ()

    @property
    def key(self) -> str | None:
        """The caller's key, when exactly one was found."""
        return self.keys[0] if self.outcome is Lookup.FOUND else None


class Listed(msgspec.Struct, frozen=True):
    """One caller as `list` and `search` show them."""

    key: str
    path: str
    caller: Caller


def callers(index: Index) -> Iterator[Listed]:
    """Every caller in service, by file name."""
    found = []
    for state in index.files.values():
        record = state.record
        if isinstance(record, Caller) and index.caller_path(record.phone_hash) == state.relpath:
            found.append(Listed(record.phone_hash, state.relpath, record))
    yield from sorted(found, key=lambda listed: listed.path.casefold())


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".md")


def find(index: Index, identities: Identities, text: str) -> Match:
    """The caller a person means by `text`: a number or full key first, then a short key, then a name."""
    key = identities.resolve(text)
    if key is not None:
        return Match(Lookup.FOUND, (key,))
    wanted = " ".join(text.split()).casefold()
    if not wanted:
        return Match(Lookup.UNKNOWN)
    everyone = list(callers(index))
    if _SHORT_KEY.fullmatch(wanted):
        keys = tuple(listed.key for listed in everyone if listed.key.startswith(wanted))
        if keys:
            return Match(Lookup.FOUND if len(keys) == 1 else Lookup.AMBIGUOUS, keys)
    keys = tuple(
        listed.key
        for listed in everyone
        if wanted in {name.casefold() for name in (listed.caller.name, *listed.caller.aliases, _stem(listed.path))}
    )
    if not keys:
        return Match(Lookup.UNKNOWN)
    return Match(Lookup.FOUND if len(keys) == 1 else Lookup.AMBIGUOUS, keys)


def search(index: Index, words: str) -> list[Listed]:
    """Callers whose name, file, facts, calls or notes hold every one of `words` (any case)."""
    wanted = [word.casefold() for word in words.split()]
    found = []
    for listed in callers(index):
        record = listed.caller
        text = "\n".join(
            [
                listed.path,
                record.name,
                *record.aliases,
                *record.facts,
                *(call.summary for call in record.calls),
                *record.notes,
            ]
        ).casefold()
        if all(word in text for word in wanted):
            found.append(listed)
    return found
