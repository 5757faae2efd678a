"""newfacts.py, and the pure changes around it (SPEC §16 "Facts from every call"): every shape the
`new_facts` data collection may take becomes at most a few clean, new, bounded facts."""

from __future__ import annotations

import json

import pytest

from server import changes, parse
from server.elevenlabs import Analysis, DataCollectionResult, PostCallData, finished_call
from server.newfacts import MAX_NEW_FACT_CHARS, MAX_NEW_FACTS, fact_key, new_facts
from server.text import TRIMMED
from tests.conftest import MARIA
from tests.live_helpers import MARIA_KEY, caller_md

THREE = ["Has a cat named Miso", "Works night shifts at the hospital", "Prefers text messages over calls"]


@pytest.mark.parametrize(
    "value",
    [
        "Has a cat named Miso\nWorks night shifts at the hospital\nPrefers text messages over calls",
        "- Has a cat named Miso\n- Works night shifts at the hospital\n- Prefers text messages over calls\n",
        "* Has a cat named Miso\r\n* Works night shifts at the hospital\r\n\r\n* Prefers text messages over calls",
        "1. Has a cat named Miso\n2) Works night shifts at the hospital\n3. Prefers text messages over calls",
        "• Has a cat named Miso\n  •  Works night shifts at the hospital\n• Prefers text messages over calls",
        json.dumps(THREE),
        THREE,
        '  ["Has a cat named Miso", "Works night shifts at the hospital", "Prefers text messages over calls"]  ',
    ],
    ids=["lines", "dash-bullets", "star-bullets-crlf", "numbered", "dots", "json-string", "list", "json-spaced"],
)
def test_every_shape_gives_the_same_three_facts(value: object) -> None:
    assert new_facts(value) == THREE


@pytest.mark.parametrize("value", [None, "", "   \n\n ", "None", "none.", "N/A", "No new facts", "[]", False, {}])
def test_nothing_gives_no_facts(value: object) -> None:
    assert new_facts(value) == []


def test_fifty_lines_give_the_bounded_number_of_facts_in_order() -> None:
    value = "\n".join(f"- Fact number {n}" for n in range(50))
    assert new_facts(value) == [f"Fact number {n}" for n in range(MAX_NEW_FACTS)]


def test_ten_kilobytes_on_one_line_is_one_trimmed_fact() -> None:
    (fact,) = new_facts("Likes " + "jazz " * 2_000)
    assert len(fact) == MAX_NEW_FACT_CHARS and fact.endswith(TRIMMED) and fact.startswith("Likes jazz jazz")


def test_ten_kilobytes_of_lines_is_bounded_and_each_fact_is_one_clean_line() -> None:
    value = "\n".join(f"- Fact\t{n} \x00with\u202econtrols\u2028and more {'x' * 20}" for n in range(300))
    assert len(value) > 10_000
    # U+2028 is a line separator: it ends a fact like a newline does.
    assert new_facts(value) == [
        "Fact 0 withcontrols",
        f"and more {'x' * 20}",
        "Fact 1 withcontrols",
        "Fact 2 withcontrols",
        "Fact 3 withcontrols",
    ]


def test_repeats_and_known_facts_are_left_out_by_case_spaces_and_punctuation() -> None:
    value = "Has a dog named Rex!\nhas a  DOG named rex\nLoves hiking.\nloves hiking\nSpeaks Spanish"
    known = ["Has a dog named Rex (conv_1234)"]
    assert new_facts(value, known) == ["Loves hiking.", "Speaks Spanish"]
    assert fact_key("  Has a dog, named: REX. (conv_9)") == fact_key("has a dog named rex")


def test_a_fact_cannot_carry_a_conversation_id_of_its_own_or_quotes() -> None:
    assert new_facts('"Owns a boat (conv_other)"\n`Allergic to nuts`') == ["Owns a boat", "Allergic to nuts"]


def test_a_phone_number_in_a_fact_never_reaches_the_file_but_dates_do() -> None:
    value = "Call back on +1 (415) 555-0177 after six\nSecond line 020 7946 0958\nBirthday on 1990-03-12"
    assert new_facts(value) == ["Call back on [phone] after six", "Second line [phone]", "Birthday on 1990-03-12"]


def test_a_number_or_dash_that_is_part_of_the_fact_stays() -> None:
    assert new_facts("3.5 hours drive from the office\n-5 degrees is too cold for her") == [
        "3.5 hours drive from the office",
        "-5 degrees is too cold for her",
    ]


def event(value: object) -> PostCallData:
    results = {"new_facts": DataCollectionResult(value=value), "caller_name": DataCollectionResult(value="Maria")}
    return PostCallData(conversation_id="conv_abc", analysis=Analysis(data_collection_results=results))


def test_the_event_carries_the_facts_and_new_facts_fills_no_frontmatter_key() -> None:
    call = finished_call(event("- Has a cat named Miso\n- Works nights"))
    assert call.new_facts == ("Has a cat named Miso", "Works nights")
    assert call.fills == {"caller_name": "Maria"}
    assert finished_call(event(None)).new_facts == ()
    assert finished_call(PostCallData(conversation_id="conv_abc")).new_facts == ()


def test_facts_are_written_with_their_conversation_id_and_found_again() -> None:
    text = caller_md(MARIA)
    written = changes.with_new_facts(text, ["Has a cat named Miso", "Works nights"], "conv_abc")
    caller = parse.parse_caller(written)
    assert caller.phone_hash == MARIA_KEY
    assert caller.facts == (
        "Prefers morning appointments",
        "Has a dog named Rex",
        "Has a cat named Miso (conv_abc)",
        "Works nights (conv_abc)",
    )
    assert changes.fact_conversations(caller) == {"conv_abc"}
    assert written.replace("- Has a cat named Miso (conv_abc)\n- Works nights (conv_abc)\n", "") == text
