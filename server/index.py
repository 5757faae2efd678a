"""The in-memory index: every caller, the soul and the daily notes, parsed once (SPEC §4).

Calls read only from here. The index does no I/O: the vault module reads files and hands the
results in through `apply`, which also decides what a result means (a new version, a broken file
that keeps its last good version in service, a deletion).
"""

from __future__ import annotations

import msgspec

from server.markdown import SOUL, Kind
from server.parse import parse_soul
from server.records import Caller, DailyNote, Soul, share_strings
from server.routing import soul_for
from server.vault import Loaded

# What the agent is told when soul.md is missing or has never parsed.
FALLBACK_SOUL = parse_soul("You are a helpful phone assistant. Be brief and friendly.")


class FileState(msgspec.Struct, gc=False):
    """What the index knows about one file: the version in service and what is on disk now.

    Out of the garbage collector's sight (it holds no cycles): 16 bytes less for each of 100,000 files.
    """

    relpath: str
    kind: Kind
    digest: str  # of the bytes on disk when last read (even if they did not parse)
    stat: int
    seq: int
    record: Caller | Soul | DailyNote | None  # last good version, kept while the file is broken
    error: str | None = None


class Index:
    """Callers by key, the soul and daily notes, plus per-file state for the watcher and /health."""

    def __init__(self) -> None:
        self.files: dict[str, FileState] = {}
        # How many indexed paths fold (ignoring case) to each folded path: a new file's name must not
        # differ from another's by case alone, which a person's Mac or Windows clone could not hold.
        self._folded: dict[str, int] = {}
        self._owner: dict[str, str] = {}  # phone_hash -> relpath of the file that holds it
        # phone_hash -> the other files whose record is that caller (duplicates), in the order they
        # came: when the owner goes, one of these takes over, without a look at every file. Only
        # callers with a duplicate are here (a dict per caller would cost 20 MB per 100,000).
        self._duplicates: dict[str, dict[str, None]] = {}
        self._gone: dict[str, int] = {}  # relpath -> seq of its deletion, so an older read cannot resurrect it
        # Every path that was given an error, some since mended or gone: /health lists errors without
        # a look at every file (at 100,000 callers, that look held calls up for tens of milliseconds).
        self._erring: set[str] = set()
        self.notes: dict[str, DailyNote] = {}
        # Per-agent souls (`souls/<name>.md`, SPEC §12) and which agent each speaks for.
        self.souls: dict[str, Soul] = {}
        self._soul_of: dict[str, Soul] = {}

    # -- lookups (the call path) ---------------------------------------------------------------

    def caller(self, key: str) -> Caller | None:
        """The caller with this key, or None."""
        relpath = self._owner.get(key)
        if relpath is None:
            return None
        record = self.files[relpath].record
        return record if isinstance(record, Caller) else None

    def caller_keys(self) -> list[str]:
        """The keys of every caller in the index."""
        return list(self._owner)

    def caller_path(self, key: str) -> str | None:
        """The vault-relative file of a caller, or None."""
        return self._owner.get(key)

    @property
    def soul(self) -> Soul:
        """The soul in service (its last good version), or a plain fallback."""
        state = self.files.get("soul.md")
        return state.record if state and isinstance(state.record, Soul) else FALLBACK_SOUL

    def soul_for(self, agent_id: object) -> Soul:
        """The soul of an agent: the per-agent soul listing it, else `soul.md`'s."""
        if self._soul_of and isinstance(agent_id, str):
            found = self._soul_of.get(agent_id)
            if found is not None:
                return found
        return self.soul

    def note(self, date: str) -> DailyNote | None:
        """The daily note of a date, if there is one."""
        return self.notes.get(date)

    @property
    def caller_count(self) -> int:
        """How many callers are in service."""
        return len(self._owner)

    def path_taken(self, relpath: str) -> bool:
        """Whether an indexed file has this path, compared without case."""
        return relpath.casefold() in self._folded

    def _fold(self, relpath: str) -> None:
        folded = relpath.casefold()
        # Most paths are their own folded form: the files' key is kept, not a second equal string.
        folded = relpath if folded == relpath else folded
        self._folded[folded] = self._folded.get(folded, 0) + 1

    def _unfold(self, relpath: str) -> None:
        folded = relpath.casefold()
        left = self._folded.get(folded, 0) - 1
        if left > 0:
            self._folded[folded] = left
        else:
            self._folded.pop(folded, None)

    def errors(self) -> dict[str, str]:
        """Files that cannot be used as they are, with the reason, by vault-relative path."""
        found = {}
        for path in sorted(self._erring):
            state = self.files.get(path)
            if state is not None and state.error:
                found[path] = state.error
            else:
                self._erring.discard(path)
        return found

    # -- updates (from the vault, via the watcher or a write) ---------------------------------

    def apply(self, relpath: str, loaded: Loaded | None, seq: int) -> bool:
        """Bring a file's state up to date; returns False if a newer result was already applied.

        `loaded` None means the file is gone. An error keeps the last good record in service.
        """
        previous = self.files.get(relpath)
        if previous is not None and previous.seq > seq:
            return False
        if previous is None and self._gone.get(relpath, -1) > seq:
            return False
        if loaded is None:
            if previous is not None:
                self._drop(previous)
                del self.files[relpath]
                self._unfold(relpath)
            self._gone[relpath] = max(seq, self._gone.get(relpath, seq))
            return True
        self._gone.pop(relpath, None)
        record = loaded.record if loaded.error is None else (previous.record if previous else None)
        if isinstance(record, Caller) and (previous is None or previous.record is not record):
            share_strings(record)
        state = FileState(relpath, loaded.kind, loaded.digest, loaded.stat, seq, record, loaded.error)
        if previous is not None and previous.record is not record and not _same_caller(previous.record, record):
            self._drop(previous)
        if previous is None:
            self._fold(relpath)
        self.files[relpath] = state
        self._claim(state)
        if state.error:
            self._erring.add(relpath)
        return True

    def _claim(self, state: FileState) -> None:
        record = state.record
        if isinstance(record, DailyNote):
            self.notes[record.date] = record
        elif isinstance(record, Soul) and state.relpath != SOUL:
            self.souls[state.relpath] = record
            self._agents_changed()
        elif isinstance(record, Caller):
            key = record.phone_hash
            owner = self._owner.get(key)
            if owner is None or owner == state.relpath or owner not in self.files:
                self._owner[key] = state.relpath
                self._not_duplicate(key, state.relpath)
            else:
                self._duplicates.setdefault(key, {})[state.relpath] = None
                if state.error is None:
                    state.error = _duplicate(owner)

    def _not_duplicate(self, key: str, relpath: str) -> None:
        duplicates = self._duplicates.get(key)
        if duplicates is not None:
            duplicates.pop(relpath, None)
            if not duplicates:
                del self._duplicates[key]

    def _drop(self, state: FileState) -> None:
        record = state.record
        if isinstance(record, DailyNote) and self.notes.get(record.date) is record:
            del self.notes[record.date]
        elif isinstance(record, Soul) and self.souls.get(state.relpath) is record:
            del self.souls[state.relpath]
            self._agents_changed()
        elif isinstance(record, Caller):
            key = record.phone_hash
            self._not_duplicate(key, state.relpath)
            if self._owner.get(key) != state.relpath:
                return
            del self._owner[key]
            # Another file claiming the same caller takes over (it was reported as a duplicate);
            # any further duplicates are now reported against the new owner.
            for relpath in list(self._duplicates.get(key, ())):
                other = self.files.get(relpath)
                if other is None or other is state or not _same_caller(other.record, record):
                    continue
                owner = self._owner.setdefault(key, other.relpath)
                if owner == other.relpath:
                    self._not_duplicate(key, owner)
                if other.error and other.error.startswith("has the same phone_hash"):
                    other.error = None if owner == other.relpath else _duplicate(owner)
                    if other.error:
                        self._erring.add(other.relpath)

    def _agents_changed(self) -> None:
        agents = {relpath: soul.agent_ids for relpath, soul in self.souls.items()}
        listed = {agent for ids in agents.values() for agent in ids}
        found = ((agent, soul_for(agent, agents)) for agent in listed)
        self._soul_of = {agent: self.souls[relpath] for agent, relpath in found if relpath is not None}


def _duplicate(owner: str) -> str:
    return f"has the same phone_hash as {owner}; only {owner} is used"


def _same_caller(old: object, new: object) -> bool:
    return isinstance(old, Caller) and isinstance(new, Caller) and old.phone_hash == new.phone_hash
