"""Prompt injection: caller-derived text cannot change the composed prompt's structure.

Property-based: whatever a fact, summary, note or name contains (placeholders, `system__` names,
headings, fence markers, newlines), the prompt keeps its fixed skeleton, every data line stays a
data line, and no placeholder or variable is added.
"""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from server.compose import FENCE, MEMORY_HEADER, NOTES_HEADER, compose
from server.records import Caller, CallLine, DailyNote, Soul
from tests.conftest import make_settings
from tests.live_helpers import BUILTIN_VARIABLES

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
SOUL = Soul(body="You are {{business_name}}'s receptionist.", variables={"business_name": "Acme"})
NASTY = st.sampled_from(
    ["{{", "}}", "{{system__caller_id}}", "system__x", "\n# Heading\n", "\n## Facts\n", "~~~", "\n~~~\n", "```", "{"]
)
MEMORY_TITLE, NOTES_TITLE = MEMORY_HEADER.splitlines()[0], NOTES_HEADER.splitlines()[0]
TEXT = st.lists(st.one_of(NASTY, st.text(max_size=20)), max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    name=TEXT,
    facts=st.lists(TEXT, max_size=5),
    summaries=st.lists(TEXT, max_size=3),
    notes=st.lists(TEXT, max_size=3),
    daily=TEXT,
)
def test_caller_text_cannot_change_the_prompt_structure(tmp_path_factory, name, facts, summaries, notes, daily):
    settings_ = make_settings(tmp_path_factory.mktemp("v"))
    caller = Caller(
        phone_hash="a" * 64,
        name=name,
        call_count=2,
        extra={"system__caller_id": "spoof", "business_name": "{{evil}}"},
        facts=tuple(facts),
        calls=tuple(CallLine.of(date="2026-11-20", summary=s) for s in summaries),
        notes=tuple(notes),
    )
    answer = compose(caller, SOUL, {"2026-11-25": DailyNote("2026-11-25", daily)}, NOW, settings_)
    encoded = msgspec.json.encode(answer).decode()
    prompt = answer.conversation_config_override.agent.prompt.prompt  # type: ignore[union-attr]

    # The only placeholders are the soul's own.
    assert prompt.count("{{") == SOUL.body.count("{{") and prompt.count("}}") == SOUL.body.count("}}")
    assert encoded.count("{{") == SOUL.body.count("{{")
    # The skeleton: soul, then the fenced memory block, then (maybe) the fenced notes block.
    assert prompt.startswith(SOUL.body + "\n\n" + MEMORY_HEADER + FENCE + "\n")
    lines = prompt[len(SOUL.body) :].splitlines()
    headings = [line for line in lines if line.startswith("#")]
    assert headings in ([MEMORY_TITLE], [MEMORY_TITLE, NOTES_TITLE])
    inside = False
    for line in lines:
        if line == FENCE:
            inside = not inside
        elif inside:
            assert line.startswith("- "), f"a data line escaped its list: {line!r}"
    assert not inside, "a fence was left open"
    assert sum(line == FENCE for line in lines) in (2, 4)
    # Variables: no system__ name, no new variable from caller keys, values neutralised.
    variables = answer.dynamic_variables
    assert not any(k.startswith("system__") for k in variables)
    assert set(variables) == {*SOUL.variables, *BUILTIN_VARIABLES}
    assert "{{" not in str(variables["business_name"])
