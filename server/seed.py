"""Reading the predecessor's `data/` directory (SPEC §8 `import-seed`).

`elevenlabs-twilio-memory-bridge` kept three JSON files keyed by a plain SHA-256 of the caller's
number. They are decoded here into Structs; `server.importer` turns them into vault files.
"""

from __future__ import annotations

from pathlib import Path

import msgspec


class SeedError(ValueError):
    """The data directory cannot be imported; the message says which file and why."""


class SeedSession(msgspec.Struct, kw_only=True):
    phone_hash: str | None = None
    caller_name: str | None = None
    call_count: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    session_id: str | None = None
    last_call_sid: str | None = None
    active: bool | None = None


class SeedMemory(msgspec.Struct, kw_only=True):
    phone_hash: str | None = None
    facts: list[str] = []


class SeedNote(msgspec.Struct, kw_only=True):
    timestamp: float
    note: str
    phone_hash: str | None = None


class Seed(msgspec.Struct):
    """The predecessor's data: sessions and memories by plain-SHA-256 phone hash, and notes."""

    sessions: dict[str, SeedSession]
    memories: dict[str, SeedMemory]
    notes: list[SeedNote]

    def caller_hashes(self) -> list[str]:
        """Every caller hash that has a session or facts, in a stable order."""
        return sorted({h.lower() for h in self.sessions} | {h.lower() for h in self.memories})


def _read(path: Path, kind: type, empty: object) -> object:
    if not path.exists():
        return empty
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except msgspec.DecodeError as exc:
        raise SeedError(f"{path.name} cannot be imported: {exc}") from None


def read_seed(data_dir: Path) -> Seed:
    """Decode `sessions.json`, `memories.json` and `notes.json` (each optional) from `data_dir`."""
    if not data_dir.is_dir():
        raise SeedError(f"{data_dir} is not a directory")
    names = ("sessions.json", "memories.json", "notes.json")
    if not any((data_dir / name).exists() for name in names):
        raise SeedError(f"{data_dir} has none of {', '.join(names)}")
    return Seed(
        sessions=_read(data_dir / "sessions.json", dict[str, SeedSession], {}),  # type: ignore[arg-type]
        memories=_read(data_dir / "memories.json", dict[str, SeedMemory], {}),  # type: ignore[arg-type]
        notes=_read(data_dir / "notes.json", list[SeedNote], []),  # type: ignore[arg-type]
    )
