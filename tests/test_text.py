"""text.py: what text may enter the vault, table-tested; and, through the real write path, that
whatever a writer accepts is read back the same from disk, as after a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from server import text, vault
from server.index import Index
from server.memory import CallWritten
from server.records import Caller
from server.service import Service, open_service
from server.text import TRIMMED, Checked, Problem
from server.watcher import Watcher
from server.writes import WriteError
from tests.conftest import make_settings
from tests.live_helpers import key_for

# Characters the loader refuses, reads back as a line break, or that make text read otherwise than stored.
HOSTILE = [
    "\x00",
    "\x01",
    "\x07",
    "\x1b",
    "\x7f",
    "\x80",
    "\x9f",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
    "\u202e",
    "\u2066",
    "\u200f",
    "\ufeff",
    "\ud800",
    "\udcff",
    "\ufffe",
    "\U0010ffff",
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("  padded  ", "padded"),
        ("a\nb\r\nc\td", "a b c d"),
        ("NUL\x00inside", "NULinside"),
        ("bell\x07 and esc\x1b[31m", "bell and esc[31m"),
        ("C1\x80\x9f gone, NEL\x85breaks", "C1 gone, NEL breaks"),
        ("line\u2028sep\u2029para", "line sep para"),
        ("vertical\x0btab\x0cfeed\x1cfs\x1fus", "vertical tab feed fs us"),
        ("\u202eevil\u202c \u2066iso\u2069 \u200fmark", "evil iso mark"),
        ("\ufeffbom", "bom"),
        ("lone\ud800surrogate\udcff", "lonesurrogate"),
        ("non\ufffechar\uffff\U0001fffe", "nonchar"),
        ("\x00\x01\u2028 \t", ""),
        ("emoji 👩\u200d👩\u200d👧 kept", "emoji 👩\u200d👩\u200d👧 kept"),
        ("accents é ñ 中文 kept", "accents é ñ 中文 kept"),
        ("## heading\n- item", "## heading - item"),
        (12, "12"),
    ],
)
def test_one_line(raw: object, expected: str) -> None:
    assert text.one_line(raw) == expected


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        ("a fact", 10, Checked("a fact")),
        ("  \x00 ", 10, Checked("", Problem.EMPTY)),
        ("", 10, Checked("", Problem.EMPTY)),
        ("x" * 10, 10, Checked("x" * 10)),
        ("x" * 11, 10, Checked("x" * 11, Problem.TOO_LONG)),
        ("x\x00" * 10, 10, Checked("x" * 10)),  # control characters do not count against the bound
        (" " * 1000 + "x", 10, Checked("x")),
        ("x " * 100_000 + "y", 200_000, Checked("x " * 100_000 + "y", Problem.TOO_LONG)),
    ],
)
def test_check(raw: str, limit: int, expected: Checked) -> None:
    assert text.check(raw, limit) == expected


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        ("short", 20, "short"),
        ("", 20, ""),
        ("a\x00b\nc", 20, "ab c"),
        ("x" * 20, 20, "x" * 20),
        ("x" * 21, 20, "x" * 9 + TRIMMED),
        ("word " * 10, 20, "word word" + TRIMMED),
        ("y" * 10_000_000, 30, "y" * 19 + TRIMMED),
        # Cut before it is scanned: a body that is mostly whitespace still says it was trimmed.
        (" " * 1000 + "tail", 20, "" + TRIMMED),
    ],
)
def test_trim(raw: str, limit: int, expected: str) -> None:
    trimmed = text.trim(raw, limit)
    assert trimmed == expected
    assert len(trimmed) <= limit


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        ("Maria", 10, "Maria"),
        ("Maria\x00 Lopez\u2028", 200, "Maria Lopez"),
        ("Maria Lopez", 6, "Maria"),
        ("\x00", 5, ""),
    ],
)
def test_clip(raw: str, limit: int, expected: str) -> None:
    assert text.clip(raw, limit) == expected


@pytest.mark.parametrize(
    ("value", "limit", "fits"),
    [("a" * 10, 10, True), ("a" * 11, 10, False), ("é" * 5, 10, True), ("é" * 6, 10, False), ("😀" * 3, 12, True)],
)
def test_fits(value: str, limit: int, fits: bool) -> None:
    assert text.fits(value, limit) is fits


ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=300)
# Arbitrary unicode (surrogates and every control character included), the hostile characters, and huge strings.
TEXTS = st.one_of(
    ANY_TEXT,
    st.lists(st.one_of(st.sampled_from(HOSTILE), ANY_TEXT), max_size=20).map("".join),
    st.tuples(ANY_TEXT, st.integers(1, 50_000)).map(lambda pair: pair[0] * pair[1]),
)


def _readable(value: str) -> bool:
    return all(
        not (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF)
        and c not in "\u2028\u2029\u202e\ufeff"
        for c in value
    )


@given(TEXTS, st.integers(1, 5_000))
@settings(max_examples=300, deadline=None)
def test_whatever_goes_in_comes_out_one_bounded_line_and_normalising_is_stable(raw: str, limit: int) -> None:
    for out, bound in (
        (text.one_line(raw), None),
        (text.check(raw, limit).text, limit if text.check(raw, limit).problem is None else None),
        (text.trim(raw, max(limit, len(TRIMMED))), max(limit, len(TRIMMED))),
        (text.clip(raw, limit), limit),
    ):
        assert out.splitlines() in ([out], [])
        assert out == out.strip() or out.endswith(TRIMMED)
        assert _readable(out)
        out.encode("utf-8")  # strict: nothing unencodable is left
        assert text.one_line(out) == out
        if bound is not None:
            assert len(out) <= bound


# ---------------------------------------------------------------------------------------------
# The real write path: vault files, git commits, the index; then a fresh index read from disk.

DAY = "2026-11-25"
_numbers = itertools.count(1000)


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.Runner, Service]]:
    """The service on a fresh vault, started as the CLI starts it, in one event loop for every example."""
    root = tmp_path_factory.mktemp("text") / "vault"
    runner = asyncio.Runner()
    service = open_service(make_settings(root))
    runner.run(service.start(watch=False))
    runner.run(service.memory.add_note("The office closes at 3pm", "api", date=DAY))
    yield runner, service
    runner.run(service.stop())
    runner.close()


def read_back(root: Path) -> Index:
    """The index a restarted service builds: every file parsed from disk, no cache."""
    index = Index()
    fresh = vault.Vault(root)
    watcher = Watcher(fresh, index, None, 1.0, 60.0)  # type: ignore[arg-type] # loading needs no git
    watcher.load_all(None)
    return index


async def _write_all(service: Service, number: str, fact: str, note: str, summary: str, name: str, daily: str) -> dict:
    memory = service.memory
    key = key_for(number)
    accepted: dict = {}
    started = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)
    outcome = await memory.write_back(key, f"conv_{number[1:]}", summary, started, {"caller_name": name}, e164=number)
    assert outcome is CallWritten.SAVED  # a post-call summary is never refused
    accepted["summary"] = text.trim(summary, text.MAX_SUMMARY_CHARS) or "Call without a summary."
    accepted["name"] = text.clip(name, text.MAX_NAME_CHARS)
    for kind, value, write in (
        ("fact", fact, lambda: memory.add_fact(key, fact, "api")),
        ("note", note, lambda: memory.add_note(note, "api", date=DAY, key=key)),
        ("daily", daily, lambda: memory.add_note(daily, "api", date=DAY)),
    ):
        try:
            await write()
        except WriteError as exc:
            # Refused only for what the rules refuse: empty or too long once normalised.
            assert text.check(value, text.MAX_FACT_CHARS if kind == "fact" else text.MAX_NOTE_CHARS).problem, exc
        else:
            accepted[kind] = text.one_line(value)
    return accepted


@given(fact=TEXTS, note=TEXTS, summary=TEXTS, name=TEXTS, daily=TEXTS)
@example(fact="allergic\x00to penicillin", note="a\u2028b", summary="x" * 1_100_000, name="Ma\x00ria", daily="NUL\x00")
@example(fact="(conv_prior) in a fact", note="\x85", summary="\x00" * 200_000, name="\u202eairaM", daily="x\x7fy")
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_whatever_a_writer_accepts_is_read_back_from_disk_after_a_restart(
    writer: tuple[asyncio.Runner, Service], fact: str, note: str, summary: str, name: str, daily: str
) -> None:
    runner, service = writer
    number = f"+1415555{next(_numbers):04d}"
    accepted = runner.run(_write_all(service, number, fact, note, summary, name, daily))

    index = read_back(service.memory.vault.root)
    assert not index.errors(), index.errors()
    record = index.caller(key_for(number))
    assert isinstance(record, Caller), "the caller is a stranger after a restart"
    assert record == service.memory.index.caller(key_for(number))  # what the service served before the restart
    assert record.name == accepted["name"]
    assert record.calls[-1].summary == accepted["summary"]
    assert record.calls[-1].conversation_id == f"conv_{number[1:]}"
    assert len(accepted["summary"]) <= text.MAX_SUMMARY_CHARS
    if "fact" in accepted:
        assert record.facts == (accepted["fact"],)
    if "note" in accepted:
        assert record.notes[-1] == f"- {DAY}: {accepted['note']}"
    daily_note = index.note(DAY)
    assert daily_note is not None, "the daily note vanished for everyone"
    if "daily" in accepted:
        assert daily_note.body.splitlines()[-1] == f"- {accepted['daily']}"
