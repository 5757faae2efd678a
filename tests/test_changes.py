"""changes.py: what each write does to a file's text, table-tested without a disk."""

from __future__ import annotations

import datetime as dt

import pytest

from server import changes, edits, parse

KEY = "a" * 64
OLD_KEY = "b" * 64
CALLER = edits.new_caller_text(KEY, name="Maria Lopez")


def test_with_key_upgrades_only_a_legacy_key() -> None:
    legacy = edits.new_caller_text(OLD_KEY)
    assert parse.parse_caller(changes.with_key(legacy, KEY, OLD_KEY)).phone_hash == KEY
    assert changes.with_key(CALLER, KEY, KEY) is CALLER


@pytest.mark.parametrize(
    ("edit", "section", "item"),
    [
        (lambda t: changes.with_fact(t, "Prefers mornings"), "facts", "Prefers mornings"),
        (lambda t: changes.with_caller_note(t, "2026-11-25", "Call back"), "notes", "- 2026-11-25: Call back"),
    ],
)
def test_appends_go_under_their_heading_and_leave_the_rest(edit, section: str, item: str) -> None:  # type: ignore[no-untyped-def]
    after = edit(CALLER)
    record = parse.parse_caller(after)
    assert item in getattr(record, section)
    assert after.startswith(CALLER.split("## Facts")[0]), "the frontmatter and title are untouched"


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (None, "# 2026-11-25\n\n- Closed at 3\n"),
        ("# 2026-11-25\n\n- Open", "# 2026-11-25\n\n- Open\n- Closed at 3\n"),
        ("", "- Closed at 3\n"),
    ],
)
def test_with_daily_note(current: str | None, expected: str) -> None:
    assert changes.with_daily_note(current, "2026-11-25", "Closed at 3") == expected


def test_call_line_ends_with_the_conversation_id_that_recorded_conversations_finds() -> None:
    line = changes.call_line(dt.datetime(2026, 11, 20, 14, 2), "Moved the appointment (conv_x)", "conv_8901")
    assert line == "- 2026-11-20 14:02 · Moved the appointment (conv_x) (conv_8901)"
    caller = parse.parse_caller(changes.with_call(CALLER, line, {}, set()))
    assert changes.recorded_conversations(caller) == {"conv_8901"}
    with_fact = parse.parse_caller(changes.with_fact(CALLER, "Said (conv_8902) on the phone"))
    assert changes.recorded_conversations(with_fact) == set(), "an id in a fact is text, not a call"


@pytest.mark.parametrize(
    ("fills", "declared", "expected"),
    [
        ({"caller_name": "Ana"}, set(), {"name": "Ana", "aliases": ["Ana"]}),
        ({"city": "Lisbon"}, {"city"}, {"city": "Lisbon"}),
        ({"city": "Lisbon"}, set(), {}),  # neither declared nor in the file
        ({"call_count": "99", "phone_hash": "x", "language": "fr"}, set(), {}),  # protected keys
        ({"caller_name": ""}, set(), {}),
    ],
)
def test_with_call_fills_only_empty_allowed_keys(fills: dict[str, str], declared: set[str], expected: dict) -> None:  # type: ignore[type-arg]
    blank = edits.new_caller_text(KEY)
    meta, _ = parse.split_frontmatter(changes.with_call(blank, "- 2026-11-20 · Hi (conv_1)", fills, declared))
    before, _ = parse.split_frontmatter(blank)
    assert {k: v for k, v in meta.items() if before.get(k) != v} == expected


def test_a_name_already_set_is_never_replaced_by_a_call() -> None:
    meta, _ = parse.split_frontmatter(
        changes.with_call(CALLER, "- 2026-11-20 · Hi (conv_1)", {"caller_name": "X"}, set())
    )
    assert meta["name"] == "Maria Lopez"


def test_merging_the_predecessors_data_twice_adds_nothing() -> None:
    text = edits.new_caller_text(OLD_KEY)
    args = {"name": "Ana", "first": "2026-01-02", "last": "2026-03-04", "calls": 5, "facts": ["Has a dog"], "notes": []}
    once = changes.merged_seed_caller(text, parse.parse_caller(text), **args)  # type: ignore[arg-type]
    twice = changes.merged_seed_caller(once, parse.parse_caller(once), **args)  # type: ignore[arg-type]
    assert once == twice
    record = parse.parse_caller(once)
    assert (record.name, record.call_count, record.first_call, record.last_call, record.facts) == (
        "Ana",
        5,
        "2026-01-02",
        "2026-03-04",
        ("Has a dog",),
    )


def test_daily_lines_are_added_once() -> None:
    once = changes.with_daily_lines(None, "2026-11-25", ["A", "B"])
    assert changes.with_daily_lines(once, "2026-11-25", ["B", "C"]) == "# 2026-11-25\n\n- A\n- B\n- C\n"
