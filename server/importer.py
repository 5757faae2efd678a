"""The legacy import: the predecessor's callers, facts and notes become vault files (SPEC §8 `import-seed`).

`server.seed` reads the predecessor's JSON files; this module merges them into the vault through the
write path, a commit per chunk of callers. Running it again adds nothing and finishes an interrupted run.
Callers keep the predecessor's plain SHA-256 hash as their `phone_hash` until their next call upgrades
it to the keyed hash (SPEC §7).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import msgspec

from server import edits, parse, phone, text
from server.changes import merged_seed_caller, with_daily_lines
from server.memory import Memory
from server.seed import Seed, SeedMemory, SeedNote, SeedSession
from server.writes import Change

# Callers written and committed together: a commit of 2,000 files takes a second or two, and an
# interrupted import loses no more than that.
CHUNK = 2_000
# Inside .git/: an import under way (a rerun resumes it, committing what it left as the import's).
MARKER = ".git/memory-bridge/import-in-progress"


class ImportReport(msgspec.Struct):
    """What `import_seed` did."""

    callers: int = 0
    daily_notes: int = 0
    skipped: int = 0
    changed: int = 0


async def import_seed(memory: Memory, seed: Seed, progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Import the predecessor's callers, facts and notes into `memory`'s vault; running it again adds nothing."""
    report = ImportReport()

    def date_of(timestamp: float | None) -> str:
        return memory.today(dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp else None)

    caller_notes: dict[str, list[SeedNote]] = {}
    daily: dict[str, list[str]] = {}
    for note in seed.notes:
        body = text.trim(note.note, text.MAX_NOTE_CHARS)  # the predecessor's data is kept, trimmed if need be
        if not body:
            continue
        if note.phone_hash:
            caller_notes.setdefault(note.phone_hash.lower(), []).append(note)
        else:
            daily.setdefault(date_of(note.timestamp), []).append(body)
    changes: list[tuple[str, Change]] = []
    lines: list[str] = []
    for key in seed.caller_hashes():
        if not phone.is_caller_key(key):
            report.skipped += 1
            continue
        # A file the service renamed once the caller's name was known is still this caller's.
        relpath = memory.index.caller_path(key) or memory.writes.names.renamed(memory.vault.new_caller_path(key))
        session = seed.sessions.get(key) or seed.sessions.get(key.upper()) or SeedSession()
        facts = (seed.memories.get(key) or seed.memories.get(key.upper()) or SeedMemory()).facts
        notes = [
            f"- {date_of(n.timestamp)}: {text.trim(n.note, text.MAX_NOTE_CHARS)}" for n in caller_notes.pop(key, [])
        ]
        changes.append((relpath, _seed_caller(key, session, date_of, facts, notes)))
        lines.append(f"import caller {phone.short(key)}")
        report.callers += 1
    for day, texts in sorted(daily.items()):
        changes.append((memory.vault.note_path(day), _seed_daily(day, texts)))
        lines.append(f"import daily note for {day}")
        report.daily_notes += len(texts)
    report.skipped += sum(len(notes) for notes in caller_notes.values())  # notes of unknown callers
    marker = memory.vault.root / MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("an import-seed has begun and not ended: run it again to finish it\n", encoding="utf-8")
    # What an interrupted run wrote and never committed is the import's: committed as such, not as a person's edit.
    leftovers = [path for path in memory.git.dirty_paths() if path in {relpath for relpath, _ in changes}]
    if leftovers:
        await memory.git.commit(leftovers, [f"import (resumed): {path}" for path in leftovers], "cli")
        report.changed += len(leftovers)
    total = len(changes)
    for start in range(0, total, CHUNK):
        # One commit per chunk: an interruption loses at most one chunk's commit, which a rerun makes.
        def step(done: int, _: int, start: int = start) -> None:
            if progress is not None:
                progress(start + done, total)

        chunk = changes[start : start + CHUNK]
        # Imported callers keep their files' names: a name from the predecessor is not one a call confirmed.
        written = await memory.writes.write_many(chunk, lines[start : start + CHUNK], "cli", step, readable=False)
        report.changed += len(written)
    marker.unlink(missing_ok=True)
    return report


def interrupted(vault_root: Path) -> bool:
    """Whether an import began in this vault and did not end: its uncommitted files are the import's."""
    return (vault_root / MARKER).exists()


def _seed_daily(day: str, texts: list[str]) -> Change:
    return lambda current: with_daily_lines(current, day, texts)


def _seed_caller(
    key: str, session: SeedSession, date_of: Callable[[float | None], str], facts: list[str], notes: list[str]
) -> Change:
    name = text.clip(session.caller_name or "", text.MAX_NAME_CHARS)
    first = date_of(session.first_seen)
    last = date_of(session.last_seen or session.first_seen)
    kept_facts = [text.trim(fact, text.MAX_FACT_CHARS) for fact in facts]

    def change(current: str | None) -> str | None:
        base = current if current is not None else edits.new_caller_text(key, name=name, calls=(first, last))
        try:
            existing = parse.parse_caller(base)
        except parse.VaultFileError:
            return None  # a hand-broken file is never overwritten; it is reported on /health
        return merged_seed_caller(
            base, existing, name=name, first=first, last=last, calls=session.call_count, facts=kept_facts, notes=notes
        )

    return change
