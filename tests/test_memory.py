"""The write path in process: recorded calls leave the index exactly as parsing the files would."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from pathlib import Path

import pytest

from server import parse, phone
from server.gitcommit import MAX_LISTED
from server.identity import Identity
from server.phone import CallerId
from server.service import Service, open_service
from server.worker import WorkerGone
from tests.conftest import MARIA, OTHER, argument_bytes, git, make_settings
from tests.live_helpers import caller_md, key_for

HAND_FORMATTED = caller_md("+14155550777", name="Odd Format").replace(
    "call_count: 3\n", '# counted by hand\n"call_count": 3\nunknown_key: kept\n'
)
# Ten thousand under a lowered stack limit (`small_argument_room`) overflow a command line the way a
# hundred thousand do on a default machine.
MANY_CALLERS = 10_000
LEGACY = (
    f'---\nphone_hash: "{hashlib.sha256(b"+14155550888").hexdigest()}"\nname: Imported\n---\n'
    "# Imported\n\n## Facts\n- From the old system\n"
)


@pytest.mark.anyio
@pytest.mark.parametrize("server", [True, False], ids=["worker process", "in process"])
async def test_recorded_calls_index_what_the_files_say(tmp_path: Path, server: bool) -> None:
    root = tmp_path / "vault"
    open_service(make_settings(root))
    (root / "callers" / "maria.md").write_text(caller_md(MARIA), encoding="utf-8")
    (root / "callers" / "odd.md").write_text(HAND_FORMATTED, encoding="utf-8")
    (root / "callers" / "legacy.md").write_text(LEGACY, encoding="utf-8")
    service = open_service(make_settings(root))
    memory = service.memory
    await service.start(watch=server)  # the server records calls in its worker process; the CLI in its own
    assert (service.worker is not None) == server
    try:
        numbers = [MARIA, MARIA, "+14155550777", "+14155550888", OTHER]  # OTHER is new
        for number in numbers:
            memory.recorder.note_call(memory.identities.identify(number))
        assert memory.recorder.pending_calls == len(numbers)
        assert await memory.recorder.record_calls() == 4
    finally:
        await service.stop()
    assert memory.recorder.pending_calls == 0
    for number, count in ((MARIA, 5), ("+14155550777", 4), ("+14155550888", 1), (OTHER, 1)):
        key = key_for(number)
        relpath = memory.index.caller_path(key)
        assert relpath is not None, number
        on_disk = parse.parse_caller((root / relpath).read_text(encoding="utf-8"))
        assert memory.index.caller(key) == on_disk, number
        assert on_disk.call_count == count and on_disk.last_call == memory.today()
    assert "unknown_key: kept" in (root / "callers" / "odd.md").read_text(encoding="utf-8")
    message = git(root, "log", "-1", "--format=%B").rstrip("\n")
    assert message.startswith("4 changes\n") and "(2 calls)" in message and message.endswith("\n\nSource: webhook")


async def started_with_maria(tmp_path: Path) -> tuple[Path, Service]:
    """A vault with Maria's file, and the service on it started as the server starts it (worker, watcher)."""
    root = tmp_path / "vault"
    open_service(make_settings(root))
    (root / "callers" / "maria.md").write_text(caller_md(MARIA), encoding="utf-8")
    service = open_service(make_settings(root))
    await service.start()
    return root, service


@pytest.mark.anyio
async def test_a_worker_dying_mid_batch_counts_each_call_once(tmp_path: Path) -> None:
    root, service = await started_with_maria(tmp_path)
    worker = service.worker
    assert worker is not None
    real_call = worker.call

    async def dies_after_the_work(op: str, *args: object) -> bytes:
        # The files are rewritten, then the process dies before its answer arrives.
        answer = await real_call(op, *args)
        if op != "record_calls":
            return answer
        os.kill(worker.pid or 0, signal.SIGKILL)
        raise WorkerGone("killed by the test")

    memory = service.memory
    try:
        worker.call = dies_after_the_work  # type: ignore[method-assign]
        for number in (MARIA, MARIA, OTHER):
            memory.recorder.note_call(memory.identities.identify(number))
        assert await memory.recorder.record_calls() == 2
        worker.call = real_call  # type: ignore[method-assign]
    finally:
        await service.stop()
    assert memory.recorder.pending_calls == 0
    for number, count in ((MARIA, 5), (OTHER, 1)):
        key = key_for(number)
        relpath = memory.index.caller_path(key)
        assert relpath is not None
        on_disk = parse.parse_caller((root / relpath).read_text(encoding="utf-8"))
        assert on_disk.call_count == count and memory.index.caller(key) == on_disk
    assert git(root, "status", "--porcelain") == ""
    assert "call from" in git(root, "log", "-1", "--format=%B")


@pytest.mark.anyio
async def test_a_call_whose_file_was_just_moved_is_counted_where_it_went(tmp_path: Path) -> None:
    root, service = await started_with_maria(tmp_path)
    memory = service.memory
    try:
        memory.recorder.note_call(memory.identities.identify(MARIA))
        # Moved by hand after the call was answered, before it is recorded (the index still has the old path).
        (root / "callers" / "vip").mkdir()
        (root / "callers" / "maria.md").rename(root / "callers" / "vip" / "maria.md")
        await memory.recorder.record_calls()
        assert not (root / "callers" / "maria.md").exists(), "the old path is not brought back"
        assert memory.recorder.pending_calls == 1
        for _ in range(300):  # the watcher sees the move; the call is tried again a second later
            if memory.recorder.pending_calls == 0:
                break
            await asyncio.sleep(0.01)
    finally:
        await service.stop()
    assert memory.recorder.pending_calls == 0
    assert memory.index.caller_path(key_for(MARIA)) == "callers/vip/maria.md"
    moved = parse.parse_caller((root / "callers" / "vip" / "maria.md").read_text(encoding="utf-8"))
    assert moved.call_count == 4
    assert sorted(p.name for p in (root / "callers").rglob("*.md")) == ["maria.md"]


@pytest.mark.anyio
async def test_a_hand_edit_right_after_a_recorded_call_is_seen(tmp_path: Path) -> None:
    # The watcher takes the worker's own writes by their stat alone; a person's save a moment later,
    # even of exactly as many bytes and in place, is still read.
    root, service = await started_with_maria(tmp_path)
    memory = service.memory
    key = key_for(MARIA)
    try:
        memory.recorder.note_call(memory.identities.identify(MARIA))
        await memory.recorder.record_calls()
        path = root / "callers" / "maria.md"
        text = path.read_text(encoding="utf-8")
        assert "Has a dog named Rex" in text
        with open(path, "r+", encoding="utf-8") as fh:  # in place: same inode, same size
            fh.write(text.replace("Has a dog named Rex", "Has a cat named Rex"))
        for _ in range(300):
            record = memory.index.caller(key)
            if record is not None and "Has a cat named Rex" in record.facts:
                break
            await asyncio.sleep(0.01)
    finally:
        await service.stop()
    record = memory.index.caller(key)
    assert record is not None and "Has a cat named Rex" in record.facts and record.call_count == 4
    assert "hand edit: callers/maria.md edited" in git(root, "log", "-1", "--format=%B")


def test_identities_are_remembered_but_junk_is_not(tmp_path: Path) -> None:
    memory = open_service(make_settings(tmp_path / "vault", AGENT_NUMBERS="+14155550100")).memory
    inbound = memory.identities.identify(MARIA, "+14155550100")
    assert inbound.key == key_for(MARIA) and memory.identities.identify(MARIA, "+14155550100") is inbound
    # Our own number calling out: the called party is the caller, remembered per pair.
    outbound = memory.identities.identify("+14155550100", MARIA)
    assert outbound.key == key_for(MARIA) and outbound is not inbound
    assert memory.identities.identify("anonymous").key is None
    remembered = memory.identities._cached.cache_info().currsize
    for n in range(100):
        junk = f"{n:03d}" + "9" * 70  # longer than any phone number
        assert memory.identities.identify(junk).caller_id.kind == "unparseable"
        assert memory.identities.identify(MARIA, junk).key == key_for(MARIA)
    assert memory.identities._cached.cache_info().currsize == remembered, "junk caller IDs must not fill the cache"


@pytest.mark.slow(seconds=5)
@pytest.mark.anyio
async def test_many_calls_waiting_at_stop_are_all_counted_and_committed(
    tmp_path: Path, small_argument_room: int
) -> None:
    # A stop after a flood: ten thousand callers' calls still waiting to be recorded. Every one is
    # counted in its file and committed; no git command line or message grows with their number.
    root = tmp_path / "vault"
    open_service(make_settings(root))
    service = open_service(make_settings(root))
    memory = service.memory
    head = git(root, "rev-parse", "HEAD").strip()
    await service.start()  # as the server: the worker process records the calls and runs git
    numbers = [f"+1415{n:07d}" for n in range(MANY_CALLERS)]
    paths = [f"callers/{key_for(number)[:12]}.md" for number in numbers]
    assert argument_bytes(paths) > small_argument_room, "the paths would fit on one command line"
    try:
        for number in numbers:
            key = key_for(number)
            memory.recorder.note_call(Identity(CallerId("phone", number), key, phone.legacy_key(number)))
        for number in numbers[:10]:  # ten callers called twice
            memory.recorder.note_call(Identity(CallerId("phone", number), key_for(number), phone.legacy_key(number)))
        assert memory.recorder.pending_calls == MANY_CALLERS + 10
    finally:
        await service.stop()
    assert memory.recorder.pending_calls == 0
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    files = {path: n for n, path in enumerate(paths)}
    assert set(git(root, "ls-files", "callers").split()) - {"callers/.gitkeep"} == set(files)
    for relpath, n in files.items():
        text = (root / relpath).read_text(encoding="utf-8")
        assert f"\ncall_count: {2 if n < 10 else 1}\n" in text, relpath
    messages = git(root, "log", "--format=%B%x1e", f"{head}..HEAD").split("\x1e")[:-1]
    assert all(len(text.splitlines()) <= MAX_LISTED + 6 for text in messages)
    assert all(text.strip().endswith("Source: webhook") for text in messages)
    assert memory.index.caller_count == MANY_CALLERS
