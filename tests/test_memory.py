"""The write path in process: recorded calls leave the index exactly as parsing the files would."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from server import vault
from server.service import open_service
from tests.conftest import MARIA, OTHER, git, make_settings
from tests.live_helpers import caller_md, key_for

HAND_FORMATTED = caller_md("+14155550777", name="Odd Format").replace(
    "call_count: 3\n", '# counted by hand\n"call_count": 3\nunknown_key: kept\n'
)
LEGACY = (
    f'---\nphone_hash: "{hashlib.sha256(b"+14155550888").hexdigest()}"\nname: Imported\n---\n'
    "# Imported\n\n## Facts\n- From the old system\n"
)


@pytest.mark.anyio
async def test_recorded_calls_index_what_the_files_say(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    open_service(make_settings(root))
    (root / "callers" / "maria.md").write_text(caller_md(MARIA), encoding="utf-8")
    (root / "callers" / "odd.md").write_text(HAND_FORMATTED, encoding="utf-8")
    (root / "callers" / "legacy.md").write_text(LEGACY, encoding="utf-8")
    service = open_service(make_settings(root))
    memory = service.memory
    await service.start(watch=False)
    try:
        numbers = [MARIA, MARIA, "+14155550777", "+14155550888", OTHER]  # OTHER is new
        for number in numbers:
            memory.note_call(memory.identify(number))
        assert memory.pending_calls == len(numbers)
        assert await memory.record_calls() == 4
    finally:
        await service.stop()
    assert memory.pending_calls == 0
    for number, count in ((MARIA, 5), ("+14155550777", 4), ("+14155550888", 1), (OTHER, 1)):
        key = key_for(number)
        relpath = memory.index.caller_path(key)
        assert relpath is not None, number
        on_disk = vault.parse_caller((root / relpath).read_text(encoding="utf-8"))
        assert memory.index.caller(key) == on_disk, number
        assert on_disk.call_count == count and on_disk.last_call == memory.today()
    assert "unknown_key: kept" in (root / "callers" / "odd.md").read_text(encoding="utf-8")
    message = git(root, "log", "-1", "--format=%B").rstrip("\n")
    assert message.startswith("4 changes\n") and "(2 calls)" in message and message.endswith("\n\nSource: webhook")
