"""parse.py: vault file bytes and text to typed records, and the refusals of broken files (SPEC §2)."""

from __future__ import annotations

import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from server.parse import _CALL, VaultFileError, parse, parse_call, parse_caller, parse_note, parse_soul, sections
from server.records import CallLine, DailyNote, Soul
from server.vault import STARTER_SOUL
from tests.vault_samples import ALIAS_BOMB, HAND, H

# ---------------------------------------------------------------------------------------------
# Parsing


def test_parse_hand_written_caller() -> None:
    caller = parse_caller(HAND)
    assert caller.phone_hash == H
    assert caller.name == "Maria Lopez"
    assert caller.aliases == ("Maria", "M. Lopez")
    assert caller.call_count == 3
    assert caller.first_call == "2026-11-01"
    assert caller.last_call == "2026-11-20"
    assert caller.language is None and caller.voice_id is None and caller.first_message is None
    assert caller.extra == {"favourite_colour": "deep blue", "business_name": "Lopez & Sons"}
    assert caller.facts == ("Prefers morning appointments", "Has a dog named Rex")
    assert caller.calls == (
        CallLine.of(
            date="2026-11-20",
            summary="Asked to move her dentist appointment.",
            conversation_id="conv_8901k5zv",
            time="14:02",
        ),
    )
    assert caller.notes == ("Free text a person wrote.",)


def test_parse_caller_call_settings_and_scalar_extras() -> None:
    text = (
        f"---\nphone_hash: {H.upper()}\nlanguage: es\nvoice_id: abc123\nfirst_message: Hola {{{{caller_name}}}}\n"
        "vip: yes\nlevel: 3\nratio: 0.5\nnested:\n  a: 1\nlisty: [1, 2]\nempty:\ncall_count: -4\n---\n"
    )
    caller = parse_caller(text)
    assert caller.phone_hash == H  # keys are lowercased
    assert caller.language == "es"
    assert caller.voice_id == "abc123"
    assert caller.first_message == "Hola {{caller_name}}"
    # Scalars only; nested maps, lists and nulls are not variables.
    assert caller.extra == {"vip": True, "level": 3, "ratio": 0.5}
    assert caller.call_count == 0  # a negative count is not trusted
    assert caller.facts == () and caller.calls == () and caller.notes == ()


@pytest.mark.parametrize("count", ["true", "'3'", "3.5", "[3]"])
def test_parse_caller_call_count_must_be_a_whole_number(count: str) -> None:
    assert parse_caller(f"---\nphone_hash: {H}\ncall_count: {count}\n---\n").call_count == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"---\nphone_hash: {H}\nname: [unclosed\n---\nbody\n", "not valid YAML"),
        (f"---\nphone_hash: {H}\nname: a: b: c\n---\n", "not valid YAML"),
        (f'---\nphone_hash: {H}\nname: "open\n---\n', "not valid YAML"),
        ("---\nname: Maria\n---\n# Maria\n", "no phone_hash"),
        ('---\nphone_hash: ""\n---\n', "no phone_hash"),
        ("---\nphone_hash:\n---\n", "no phone_hash"),
        ("# Maria\n\n## Facts\n- no frontmatter at all\n", "no phone_hash"),
        ("---\nphone_hash: 12345\n---\n", "64 hexadecimal"),
        (f"---\nphone_hash: {H}0\n---\n", "64 hexadecimal"),
        (f"---\nphone_hash: {'g' * 64}\n---\n", "64 hexadecimal"),
        (f"---\nphone_hash: {H}\nname: Maria\n# Maria\n\n## Facts\n", "no closing '---'"),
        (f"---\nphone_hash: {H}\nbase: &b hello\ncopy: *b\n---\n", "anchors or aliases"),
        (f"---\nphone_hash: {H}\nbase: &anchor\n  a: 1\n---\n", "anchors or aliases"),
        (f"---\n- phone_hash: {H}\n---\n", "not a set of key: value"),
        ("---\njust a string\n---\n", "not a set of key: value"),
    ],
)
def test_parse_caller_refuses_broken_files(text: str, message: str) -> None:
    with pytest.raises(VaultFileError) as info:
        parse_caller(text)
    assert message in str(info.value)


def test_bad_yaml_message_names_the_line() -> None:
    text = f"---\nphone_hash: {H}\nname: Maria\ncity: [Lisbon\n---\n"
    with pytest.raises(VaultFileError, match=r"line \d+"):
        parse_caller(text)


def test_yaml_alias_bomb_is_refused_quickly() -> None:
    bomb = "---\nphone_hash: " + H + "\na: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb += f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    bomb += "---\n"
    with pytest.raises(VaultFileError, match="anchors or aliases"):
        parse_caller(bomb)


@pytest.mark.parametrize(
    "value",
    ['"see *this* now"', "Tom & Jerry", "'a &b'", "5 * 3", "x*y"],
)
def test_asterisks_and_ampersands_in_values_are_not_aliases(value: str) -> None:
    caller = parse_caller(f"---\nphone_hash: {H}\nname: {value}\n---\n")
    assert "*" in caller.name or "&" in caller.name


def test_parse_crlf_and_bom() -> None:
    crlf = HAND.replace("\n", "\r\n")
    assert parse_caller(crlf) == parse_caller(HAND)
    data = b"\xef\xbb\xbf" + HAND.encode()
    assert parse("callers/maria.md", data) == parse_caller(HAND)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"---\nphone_hash: x\n---\n\x00\x01\x02binary", "binary"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("---\nname: Mar\u00eda\n---\n".encode("latin-1"), "not UTF-8"),
        (b"\xff\xfe\x00m\x00a", "binary"),
    ],
)
def test_parse_refuses_binary_and_non_utf8(data: bytes, message: str) -> None:
    with pytest.raises(VaultFileError, match=message):
        parse("callers/x.md", data)


def test_parse_refuses_files_that_are_not_vault_files() -> None:
    with pytest.raises(VaultFileError, match="not a vault file"):
        parse("README.md", b"# hello\n")


@pytest.mark.parametrize(
    ("item", "call"),
    [
        (
            "2026-11-20 14:02 · Asked about Friday. (conv_8901k5zv)",
            CallLine.of("2026-11-20", "Asked about Friday.", "conv_8901k5zv", "14:02"),
        ),
        ("2026-11-20: Short call", CallLine.of("2026-11-20", "Short call", None, None)),
        ("2026-11-20T09:30 - Rang back (conv_a-b_C)", CallLine.of("2026-11-20", "Rang back", "conv_a-b_C", "09:30")),
        ("2026-11-20 — dashes", CallLine.of("2026-11-20", "dashes", None, None)),
        ("Called about the invoice", CallLine.of("", "Called about the invoice", None, None)),
    ],
)
def test_parse_call(item: str, call: CallLine) -> None:
    assert parse_call(item) == call


@pytest.mark.parametrize(
    ("item", "summary", "conversation_id"),
    [
        ("2026-11-20 14:02 · Asked about Friday. (conv_8901k5zv)", "Asked about Friday.", "conv_8901k5zv"),
        ("2026-11-20 · Rang (conv_first) (conv_second)", "Rang (conv_first)", "conv_second"),
        ("2026-11-20 · (conv_only)", "", "conv_only"),
        ("2026-11-20 · Paid (in cash)", "Paid (in cash)", None),
        ("2026-11-20 · Paid (conv_x) and more)", "Paid (conv_x) and more)", None),
        ("2026-11-20 · Spoke (conv_bad!)", "Spoke (conv_bad!)", None),
        ("2026-11-20 · Spaced out   (conv_s)  ", "Spaced out", "conv_s"),
        ("Undated line (conv_1)", "Undated line (conv_1)", None),  # only a dated line carries an id
    ],
)
def test_a_call_tells_its_summary_from_its_conversation_id(
    item: str, summary: str, conversation_id: str | None
) -> None:
    call = parse_call(item)
    assert (call.summary, call.conversation_id) == (summary, conversation_id)


@settings(max_examples=300, deadline=None)
@given(
    summary=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40).map(str.strip),
    conversation=st.none() | st.from_regex(r"conv_[A-Za-z0-9_\-]{1,12}", fullmatch=True),
)
def test_a_call_line_reads_back_as_the_parser_read_it(summary: str, conversation: str | None) -> None:
    item = f"2026-11-20 10:00 · {summary}" + (f" ({conversation})" if conversation else "")
    expected = _CALL.match(item)
    assume(expected is not None and "\n" not in item and "\r" not in item)
    call = parse_call(item)
    assert call.summary == expected.group("summary")
    assert call.conversation_id == expected.group("conv")


def test_sections() -> None:
    body = "# Title\nintro\n## Facts\n- a\n### sub\n- b\n## NOTES ##\nfree\n# Other\nignored\n## Facts\n- c\n"
    found = sections(body)
    assert found["facts"] == ["- a", "### sub", "- b", "- c"]
    assert found["notes"] == ["free"]
    assert "title" not in found and "other" not in found


def test_facts_accept_any_list_marker_and_checkboxes() -> None:
    text = f"---\nphone_hash: {H}\n---\n## Facts\n* star\n+ plus\n- [x] done\n  - nested\nnot an item\n-\n"
    assert parse_caller(text).facts == ("star", "plus", "done", "nested")


def test_parse_soul() -> None:
    text = (
        "---\n# greetings\nfirst_message: Hello {{business_name}}\nfirst_message_returning: 'Hi {{caller_name}}'\n"
        "business_name: our office\nopen: yes\nseats: 4\nlisty: [a]\n---\n\nYou are {{business_name}}.\n\n"
    )
    soul = parse_soul(text)
    assert soul == Soul(
        body="You are {{business_name}}.",
        first_message="Hello {{business_name}}",
        first_message_returning="Hi {{caller_name}}",
        variables={"business_name": "our office", "open": True, "seats": 4, "listy": ""},
    )


def test_parse_soul_without_frontmatter() -> None:
    assert parse_soul("Just be nice.\n") == Soul(body="Just be nice.")


def test_starter_soul_parses() -> None:
    soul = parse_soul(STARTER_SOUL.read_text())
    assert soul.first_message and soul.first_message_returning
    assert "business_name" in soul.variables


def test_parse_note() -> None:
    assert parse_note("2026-11-25", "# 2026-11-25\n\n- Office closes at 3pm\n- Bring umbrellas\n") == DailyNote(
        "2026-11-25", "- Office closes at 3pm\n- Bring umbrellas"
    )
    # A different first heading is content, not the title.
    assert parse_note("2026-11-25", "# Heads up\nclosed\n").body == "# Heads up\nclosed"
    assert parse("notes/2026-11-25.md", b"---\ntags: [x]\n---\nhello\n") == DailyNote("2026-11-25", "hello")


# Fences as Obsidian reads them (see server.markdown): YAML's `...` does not close a block, and
# `----` neither opens nor closes one.
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"---\nphone_hash: {H}\n...\n# Maria\n", "no closing '---'"),
        (f"---\nphone_hash: {H}\n----\n# Maria\n", "no closing '---'"),
        (f"----\nphone_hash: {H}\n----\n# Maria\n", "no phone_hash"),
        (f" ---\nphone_hash: {H}\n---\n# Maria\n", "no phone_hash"),
    ],
)
def test_only_obsidian_fences_count(text: str, message: str) -> None:
    with pytest.raises(VaultFileError, match=message):
        parse_caller(text)


def test_a_fence_with_trailing_spaces_counts() -> None:
    assert parse_caller(f"---  \nphone_hash: {H}\n--- \t\n# Maria\n").phone_hash == H


def test_an_alias_bomb_is_refused_at_once() -> None:
    started = time.perf_counter()
    with pytest.raises(VaultFileError, match="anchors or aliases"):
        parse_caller(ALIAS_BOMB.format(key="a" * 64))
    assert time.perf_counter() - started < 0.5, "the bomb was expanded, or nearly"
