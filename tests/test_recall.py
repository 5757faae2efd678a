"""recall.py and the prompt's bound (SPEC §16): the best matching lines of one caller's memory, never
another's; and a prompt that keeps the name and every fact, and counts the older calls it leaves out."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from server.compose import compose, older_calls_line
from server.config import Settings
from server.recall import MAX_ANSWER_CHARS, lines_of, recall
from server.records import Caller, CallLine, Soul

NOW = dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.UTC)
SOUL = Soul(body="You are a receptionist.", first_message="Hello.")

MARIA = Caller(
    phone_hash="ab" * 32,
    name="Maria Lopez",
    facts=("Has a dog named Rex", "Allergic to penicillin (conv_f1)"),
    calls=(
        CallLine.of("2026-10-01", "Booked a cleaning with Dr. Weiss.", "conv_1", "09:15"),
        CallLine.of("2026-11-10", "Asked about her dentist bill.", "conv_2", "10:00"),
        CallLine.of("2026-11-20", "Moved her dentist appointment to Friday.", "conv_3", "14:02"),
    ),
    notes=("- 2026-11-21: prefers email",),
)


def test_the_best_matches_first_then_the_newest() -> None:
    assert recall(MARIA, "When is the dentist appointment?") == [
        "Call 2026-11-20 14:02: Moved her dentist appointment to Friday.",
        "Call 2026-11-10 10:00: Asked about her dentist bill.",
    ]
    assert recall(MARIA, "dogs") == ["Fact: Has a dog named Rex"]
    assert recall(MARIA, "penicillin allergy") == ["Fact: Allergic to penicillin"]
    assert recall(MARIA, "Weiss") == ["Call 2026-10-01 09:15: Booked a cleaning with Dr. Weiss."]
    assert recall(MARIA, "email") == ["Note: 2026-11-21: prefers email"]


def test_nothing_for_no_caller_no_words_or_no_match() -> None:
    assert recall(None, "dentist") == []
    assert recall(MARIA, "") == []
    assert recall(MARIA, "what did the caller say last time?") == []  # only words that match everything
    assert recall(MARIA, "submarine") == []


def test_the_answer_is_bounded_and_one_line_each() -> None:
    many = Caller(
        phone_hash="cd" * 32,
        calls=tuple(CallLine.of("2026-01-01", f"Parcel {n} {{{{x}}}} " + "word " * 80) for n in range(50)),
    )
    answer = recall(many, "parcel")
    assert answer and len("\n".join(answer)) <= MAX_ANSWER_CHARS
    assert all("\n" not in line and "{{" not in line for line in answer)
    assert answer[0].startswith("Call 2026-01-01: Parcel 49 ")  # the newest of equals first


WORDS = st.sampled_from(["dentist", "rex", "invoice", "friday", "parcel", "boat", "jazz", "miso", "x", "Ünïcode"])
LINES = st.lists(WORDS, min_size=1, max_size=5).map(" ".join)


@st.composite
def callers(draw: st.DrawFn) -> Caller:
    n = draw(st.integers(0, 10_000))
    return Caller(
        phone_hash=f"{n:064x}",
        facts=tuple(draw(st.lists(LINES, max_size=5))),
        calls=tuple(
            CallLine.of("2026-11-20", line, f"conv_{i}", "10:00") for i, line in enumerate(draw(st.lists(LINES)))
        ),
        notes=tuple(draw(st.lists(LINES, max_size=3))),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(callers(), min_size=2, max_size=6, unique_by=lambda c: c.phone_hash), LINES, st.data())
def test_recall_never_answers_with_another_callers_line(vault: list[Caller], query: str, data: st.DataObject) -> None:
    # Tag each caller's lines so that no two callers share a line: any leak would show.
    tagged = [
        Caller(
            phone_hash=c.phone_hash,
            facts=tuple(f"{f} owner{c.phone_hash[-6:]}" for f in c.facts),
            calls=tuple(
                CallLine.of(k.date, f"{k.summary} owner{c.phone_hash[-6:]}", k.conversation_id, k.time) for k in c.calls
            ),
            notes=tuple(f"{n} owner{c.phone_hash[-6:]}" for n in c.notes),
        )
        for c in vault
    ]
    by_key = {c.phone_hash: c for c in tagged}
    who = data.draw(st.sampled_from(sorted(by_key)))
    answer = recall(by_key[who], query)
    own = set(lines_of(by_key[who]))
    for line in answer:
        assert line in own, line  # lines here are short: none is clipped
        assert f"owner{who[-6:]}" in line
        for other in by_key:
            if other != who:
                assert f"owner{other[-6:]}" not in line
    assert len("\n".join(answer)) <= MAX_ANSWER_CHARS


def test_a_caller_with_500_calls_keeps_every_fact_and_counts_the_older_calls() -> None:
    facts = tuple(f"Fact {n}: likes item {n}" for n in range(12))
    calls = tuple(
        CallLine.of(f"2025-{1 + n // 28 % 12:02d}-{1 + n % 28:02d}", f"Call {n} about order {n}.", f"conv_{n}", "10:00")
        for n in range(500)
    )
    calls = (CallLine.of("2024-01-02", "Ordered the blue teapot with the chipped lid.", "conv_first", "09:00"), *calls)
    caller = Caller(phone_hash="ef" * 32, name="Ana", call_count=501, facts=facts, calls=calls)
    bound = 3_000
    prompt = compose(caller, SOUL, {}, NOW, Settings(prompt_max_chars=bound)).dynamic_variables["caller_memory"]
    assert isinstance(prompt, str)
    lines = prompt.splitlines()
    assert lines[0] == "- Name: Ana"
    assert lines[2 : 2 + len(facts)] == [f"- Fact: {fact}" for fact in facts]
    shown = [line for line in lines if line.startswith("- Call 2")]
    assert shown and shown[-1] == "- Call 2025-06-24 10:00: Call 499 about order 499."
    assert lines[-1] == older_calls_line(501 - len(shown))
    assert "teapot" not in prompt
    full = compose(caller, SOUL, {}, NOW, Settings(prompt_max_chars=bound)).conversation_config_override
    assert full is not None and full.agent is not None and full.agent.prompt is not None
    assert len(full.agent.prompt.prompt) <= bound
    assert recall(caller, "teapot")[0] == "Call 2024-01-02 09:00: Ordered the blue teapot with the chipped lid."


def test_when_every_call_fits_nothing_is_said_of_older_calls() -> None:
    prompt = compose(MARIA, SOUL, {}, NOW, Settings()).dynamic_variables["caller_memory"]
    assert isinstance(prompt, str) and "Older calls" not in prompt
    assert "- Fact: Allergic to penicillin" in prompt.splitlines()  # the conversation id stays in the file
