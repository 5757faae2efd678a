"""vault.py: parsing vault files, surgical byte-preserving edits, and the vault on disk (SPEC §2, §4)."""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import os
from pathlib import Path

import pytest

from server import vault
from server.records import Caller, CallLine, DailyNote, Soul
from server.vault import Vault, VaultFileError

H = "ab" * 32  # a caller key
H2 = "cd" * 32

# A caller file as a person might write it by hand: a comment line, a trailing comment, single and
# double quotes, a quoted key, a folded scalar, keys in an odd order, unknown keys, a flow list, a
# block list at column 0, extra spacing, an extra section, text outside any section, trailing
# whitespace, and no newline at the end of the file.
HAND = f"""---
# Maria's card, kept by Ana at the front desk
name: 'Maria Lopez'   # her preferred spelling
favourite_colour: >-
  deep
  blue
phone_hash: "{H}"
tags: [vip, "dentist"]
"call_count": 3
last_call: 2026-11-20
first_call:   2026-11-01
aliases:
- Maria
- "M. Lopez"
business_name: "Lopez & Sons"
---
# Maria Lopez

Intro paragraph that belongs to no section.

## Facts
- Prefers morning appointments
- Has a dog named Rex

## Calls
- 2026-11-20 14:02 · Asked to move her dentist appointment. (conv_8901k5zv)

## Preferences
Likes tea, *not* coffee.
Trailing spaces here   \n\
\n\
## Notes
Free text a person wrote."""


def changed_lines(before: str, after: str) -> list[tuple[int, str, str]]:
    """(line number, before, after) for every line that differs; both texts must have as many lines."""
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(a) == len(b), "line count changed"
    return [(i, x, y) for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


# ---------------------------------------------------------------------------------------------
# Parsing


def test_parse_hand_written_caller() -> None:
    caller = vault.parse_caller(HAND)
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
        CallLine(
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
    caller = vault.parse_caller(text)
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
    assert vault.parse_caller(f"---\nphone_hash: {H}\ncall_count: {count}\n---\n").call_count == 0


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
        vault.parse_caller(text)
    assert message in str(info.value)


def test_bad_yaml_message_names_the_line() -> None:
    text = f"---\nphone_hash: {H}\nname: Maria\ncity: [Lisbon\n---\n"
    with pytest.raises(VaultFileError, match=r"line \d+"):
        vault.parse_caller(text)


def test_yaml_alias_bomb_is_refused_quickly() -> None:
    bomb = "---\nphone_hash: " + H + "\na: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb += f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    bomb += "---\n"
    with pytest.raises(VaultFileError, match="anchors or aliases"):
        vault.parse_caller(bomb)


@pytest.mark.parametrize(
    "value",
    ['"see *this* now"', "Tom & Jerry", "'a &b'", "5 * 3", "x*y"],
)
def test_asterisks_and_ampersands_in_values_are_not_aliases(value: str) -> None:
    caller = vault.parse_caller(f"---\nphone_hash: {H}\nname: {value}\n---\n")
    assert "*" in caller.name or "&" in caller.name


def test_parse_crlf_and_bom() -> None:
    crlf = HAND.replace("\n", "\r\n")
    assert vault.parse_caller(crlf) == vault.parse_caller(HAND)
    data = b"\xef\xbb\xbf" + HAND.encode()
    assert vault.parse("callers/maria.md", data) == vault.parse_caller(HAND)


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
        vault.parse("callers/x.md", data)


def test_parse_refuses_files_that_are_not_vault_files() -> None:
    with pytest.raises(VaultFileError, match="not a vault file"):
        vault.parse("README.md", b"# hello\n")


@pytest.mark.parametrize(
    ("relpath", "kind"),
    [
        ("soul.md", "soul"),
        ("callers/abc.md", "caller"),
        ("callers/Maria Lopez.md", "caller"),
        ("callers/family/Maria.md", "caller"),
        ("notes/2026-11-25.md", "note"),
        ("notes/2026-11-25 meeting.md", "other"),
        ("notes/sub/2026-11-25.md", "other"),
        ("notes/today.md", "other"),
        ("callers/abc.txt", "other"),
        ("callers/.abc.md.1234.mb.tmp", "other"),
        ("callers/.hidden.md", "other"),
        (".obsidian/callers/x.md", "other"),
        ("callers/.trash/x.md", "other"),
        ("README.md", "other"),
        ("other/soul.md", "other"),
    ],
)
def test_kind_of(relpath: str, kind: str) -> None:
    assert vault.kind_of(relpath) == kind


@pytest.mark.parametrize(
    ("item", "call"),
    [
        (
            "2026-11-20 14:02 · Asked about Friday. (conv_8901k5zv)",
            CallLine("2026-11-20", "Asked about Friday.", "conv_8901k5zv", "14:02"),
        ),
        ("2026-11-20: Short call", CallLine("2026-11-20", "Short call", None, None)),
        ("2026-11-20T09:30 - Rang back (conv_a-b_C)", CallLine("2026-11-20", "Rang back", "conv_a-b_C", "09:30")),
        ("2026-11-20 — dashes", CallLine("2026-11-20", "dashes", None, None)),
        ("Called about the invoice", CallLine("", "Called about the invoice", None, None)),
    ],
)
def test_parse_call(item: str, call: CallLine) -> None:
    assert vault.parse_call(item) == call


def test_sections() -> None:
    body = "# Title\nintro\n## Facts\n- a\n### sub\n- b\n## NOTES ##\nfree\n# Other\nignored\n## Facts\n- c\n"
    found = vault.sections(body)
    assert found["facts"] == ["- a", "### sub", "- b", "- c"]
    assert found["notes"] == ["free"]
    assert "title" not in found and "other" not in found


def test_facts_accept_any_list_marker_and_checkboxes() -> None:
    text = f"---\nphone_hash: {H}\n---\n## Facts\n* star\n+ plus\n- [x] done\n  - nested\nnot an item\n-\n"
    assert vault.parse_caller(text).facts == ("star", "plus", "done", "nested")


def test_parse_soul() -> None:
    text = (
        "---\n# greetings\nfirst_message: Hello {{business_name}}\nfirst_message_returning: 'Hi {{caller_name}}'\n"
        "business_name: our office\nopen: yes\nseats: 4\nlisty: [a]\n---\n\nYou are {{business_name}}.\n\n"
    )
    soul = vault.parse_soul(text)
    assert soul == Soul(
        body="You are {{business_name}}.",
        first_message="Hello {{business_name}}",
        first_message_returning="Hi {{caller_name}}",
        variables={"business_name": "our office", "open": True, "seats": 4, "listy": ""},
    )


def test_parse_soul_without_frontmatter() -> None:
    assert vault.parse_soul("Just be nice.\n") == Soul(body="Just be nice.")


def test_starter_soul_parses() -> None:
    soul = vault.parse_soul((Path(vault.__file__).parent / "templates" / "soul.md").read_text())
    assert soul.first_message and soul.first_message_returning
    assert "business_name" in soul.variables


def test_parse_note() -> None:
    assert vault.parse_note("2026-11-25", "# 2026-11-25\n\n- Office closes at 3pm\n- Bring umbrellas\n") == DailyNote(
        "2026-11-25", "- Office closes at 3pm\n- Bring umbrellas"
    )
    # A different first heading is content, not the title.
    assert vault.parse_note("2026-11-25", "# Heads up\nclosed\n").body == "# Heads up\nclosed"
    assert vault.parse("notes/2026-11-25.md", b"---\ntags: [x]\n---\nhello\n") == DailyNote("2026-11-25", "hello")


# ---------------------------------------------------------------------------------------------
# Surgical edits: only the lines a change is about, every other byte as it was


def test_set_properties_touches_only_its_lines() -> None:
    out = vault.set_properties(HAND, {"call_count": 4, "last_call": dt.date(2026, 11, 25)})
    expected = HAND.replace('"call_count": 3\n', "call_count: 4\n").replace(
        "last_call: 2026-11-20\n", "last_call: 2026-11-25\n"
    )
    assert out == expected
    assert [(i, a, b) for i, a, b in changed_lines(HAND, out)] == [
        (8, '"call_count": 3\n', "call_count: 4\n"),
        (9, "last_call: 2026-11-20\n", "last_call: 2026-11-25\n"),
    ]
    caller = vault.parse_caller(out)
    assert (caller.call_count, caller.last_call, caller.first_call) == (4, "2026-11-25", "2026-11-01")
    assert caller.extra == vault.parse_caller(HAND).extra


def test_set_properties_replaces_a_whole_multiline_entry() -> None:
    out = vault.set_properties(HAND, {"aliases": ["Maria Lopez", "no"], "favourite_colour": "green"})
    expected = HAND.replace('aliases:\n- Maria\n- "M. Lopez"\n', "aliases:\n  - Maria Lopez\n  - 'no'\n").replace(
        "favourite_colour: >-\n  deep\n  blue\n", "favourite_colour: green\n"
    )
    assert out == expected
    caller = vault.parse_caller(out)
    assert caller.aliases == ("Maria Lopez", "no")
    assert caller.extra["favourite_colour"] == "green"


def test_set_properties_adds_new_keys_at_the_end_of_the_block() -> None:
    out = vault.set_properties(HAND, {"language": "es", "phone": "+15551234567"})
    expected = HAND.replace(
        'business_name: "Lopez & Sons"\n---\n',
        "business_name: \"Lopez & Sons\"\nlanguage: es\nphone: '+15551234567'\n---\n",
    )
    assert out == expected
    meta, _ = vault.split_frontmatter(out)
    assert meta["phone"] == "+15551234567"
    assert vault.parse_caller(out).language == "es"


def test_fill_an_empty_name() -> None:
    text = f"---\nphone_hash: {H}\nname:\naliases: []\ncall_count: 1 # first call\n---\n# Caller abababababab\n"
    out = vault.set_properties(text, {"name": "Maria Lopez", "aliases": ["Maria Lopez"]})
    assert out == (
        f"---\nphone_hash: {H}\nname: Maria Lopez\naliases:\n  - Maria Lopez\ncall_count: 1 # first call\n"
        "---\n# Caller abababababab\n"
    )
    assert vault.parse_caller(out).name == "Maria Lopez"
    assert vault.set_properties(text, {"aliases": []}) == text  # an empty list stays `[]`


def test_set_properties_same_value_is_identical() -> None:
    text = f"---\nphone_hash: {H}\ncall_count: 4\n---\nbody\n"
    assert vault.set_properties(text, {"call_count": 4}) == text


def test_set_properties_does_not_match_a_longer_key_or_a_comment() -> None:
    text = f"---\nphone_hash: {H}\n# name: old comment\nname_alt: keep\n  # indented comment stays\nname2: x\n---\n"
    out = vault.set_properties(text, {"name": "Ana"})
    assert out == text.replace("name2: x\n", "name2: x\nname: Ana\n")


def test_set_properties_without_frontmatter_prepends_one() -> None:
    body = "# Maria\n\n## Facts\n- likes tea"
    out = vault.set_properties(body, {"phone_hash": H, "call_count": 0})
    assert out == f'---\nphone_hash: "{H}"\ncall_count: 0\n---\n' + body
    assert vault.parse_caller(out).facts == ("likes tea",)


def test_set_properties_on_unclosed_frontmatter_is_an_error() -> None:
    with pytest.raises(VaultFileError, match="closing"):
        vault.set_properties(f"---\nphone_hash: {H}\nname: Maria\n", {"call_count": 1})


def test_set_properties_ignores_a_horizontal_rule_in_the_body() -> None:
    text = f"---\nphone_hash: {H}\ncall_count: 1\n---\nabove\n\n---\n\ncall_count: not a property\n"
    out = vault.set_properties(text, {"call_count": 2, "new_key": "v"})
    assert out == f"---\nphone_hash: {H}\ncall_count: 2\nnew_key: v\n---\nabove\n\n---\n\ncall_count: not a property\n"


def test_append_to_existing_sections() -> None:
    out = vault.append_to_section(HAND, "Facts", "- Allergic to penicillin")
    assert out == HAND.replace(
        "- Has a dog named Rex\n", "- Has a dog named Rex\n- Allergic to penicillin\n"
    )  # after the last item, before the blank line
    out = vault.append_to_section(out, "calls", "- 2026-11-25 09:00 · Booked a cleaning. (conv_new)")
    out = vault.append_to_section(out, "Notes", "- 2026-11-25: prefers email")
    expected = (
        HAND.replace("- Has a dog named Rex\n", "- Has a dog named Rex\n- Allergic to penicillin\n")
        .replace(
            "(conv_8901k5zv)\n",
            "(conv_8901k5zv)\n- 2026-11-25 09:00 · Booked a cleaning. (conv_new)\n",
        )
        .replace("Free text a person wrote.", "Free text a person wrote.\n- 2026-11-25: prefers email\n")
    )
    assert out == expected
    # Everything before the first appended line is byte-identical, the frontmatter included.
    assert out.startswith(HAND[: HAND.index("- Has a dog named Rex\n")])
    caller = vault.parse_caller(out)
    assert caller.facts[-1] == "Allergic to penicillin"
    assert caller.calls[-1] == CallLine("2026-11-25", "Booked a cleaning.", "conv_new", "09:00")
    assert caller.notes == ("Free text a person wrote.", "- 2026-11-25: prefers email")


def test_append_creates_a_missing_section_at_the_end() -> None:
    out = vault.append_to_section(HAND, "Reminders", "- call back Monday")
    assert out == HAND + "\n\n## Reminders\n- call back Monday\n"
    text = f"---\nphone_hash: {H}\n---\n# Maria\n"
    assert vault.append_to_section(text, "Facts", "- a") == text + "\n## Facts\n- a\n"
    # A level-1 heading of the same name is not the section.
    text = f"---\nphone_hash: {H}\n---\n# Facts\n"
    assert vault.append_to_section(text, "Facts", "- a") == text + "\n## Facts\n- a\n"


def test_append_to_an_empty_section_and_to_one_without_newline() -> None:
    fresh = vault.new_caller_text(H)
    out = vault.append_to_section(fresh, "Facts", "- first")
    assert out == fresh.replace("## Facts\n\n", "## Facts\n- first\n\n")
    text = f"---\nphone_hash: {H}\n---\n## Notes"
    assert vault.append_to_section(text, "Notes", "- a") == text + "\n- a\n"


def test_append_ignores_headings_inside_the_frontmatter() -> None:
    text = f"---\nphone_hash: {H}\n## Facts: not a heading\n---\nbody\n"
    assert vault.append_to_section(text, "Facts", "- a") == text + "\n## Facts\n- a\n"


def test_append_to_a_heading_with_closing_hashes_and_other_case() -> None:
    text = f"---\nphone_hash: {H}\n---\n## facts ##\n- x\n\n## Calls\n"
    assert vault.append_to_section(text, "Facts", "- a") == text.replace("- x\n", "- x\n- a\n")


def test_crlf_file_stays_crlf_and_only_intended_lines_change() -> None:
    crlf = HAND.replace("\n", "\r\n")
    out = vault.set_properties(crlf, {"call_count": 4, "last_call": dt.date(2026, 11, 25), "voice_id": "v1"})
    out = vault.append_to_section(out, "Facts", "- Allergic to penicillin")
    out = vault.append_to_section(out, "Notes", "- 2026-11-25: hi")
    out = vault.append_to_section(out, "Reminders", "- Monday")
    lf = vault.set_properties(HAND, {"call_count": 4, "last_call": dt.date(2026, 11, 25), "voice_id": "v1"})
    lf = vault.append_to_section(lf, "Facts", "- Allergic to penicillin")
    lf = vault.append_to_section(lf, "Notes", "- 2026-11-25: hi")
    lf = vault.append_to_section(lf, "Reminders", "- Monday")
    assert out == lf.replace("\n", "\r\n")
    assert "\n" not in out.replace("\r\n", "")  # no bare LF anywhere
    assert vault.parse_caller(out) == vault.parse_caller(lf)


def test_full_write_cycle_keeps_every_untouched_byte() -> None:
    """The edits a call makes, in sequence, leave everything else byte-for-byte as the person wrote it."""
    out = vault.set_properties(HAND, {"call_count": 4, "last_call": dt.date(2026, 11, 25)})
    out = vault.append_to_section(out, "Calls", "- 2026-11-25 09:00 · Booked. (conv_2)")
    out = vault.set_properties(out, {"call_count": 5})
    out = vault.append_to_section(out, "Facts", "- Has a cat too")
    removed = {
        '"call_count": 3\n',
        "last_call: 2026-11-20\n",
        "Free text a person wrote.",
    }
    added = {
        "call_count: 5\n",
        "last_call: 2026-11-25\n",
        "- 2026-11-25 09:00 · Booked. (conv_2)\n",
        "- Has a cat too\n",
        "Free text a person wrote.",
    }
    before, after = HAND.splitlines(keepends=True), out.splitlines(keepends=True)
    assert [line for line in before if line not in removed] == [line for line in after if line not in added]
    assert out.encode().startswith(HAND.encode()[: HAND.encode().index(b'"call_count": 3')])


# ---------------------------------------------------------------------------------------------
# Values YAML would misread are quoted and read back as the same string


MISREAD = [
    "+15551234567",
    "no",
    "No",
    "yes",
    "on",
    "off",
    "true",
    "null",
    "~",
    "0123",
    "0777",
    "1_000",
    "0x1F",
    "12:30",
    "1.0",
    ".inf",
    "2026-11-20",
    "1" * 64,
    "0" * 64,
    "0123456701234567012345670123456701234567012345670123456701234567",
    "",
    " leading",
    "trailing ",
    "- dash",
    "# hash",
    "a #b",
    "a: b",
    "*alias",
    "&anchor",
    "!tag",
    "@at",
    "`tick",
    "%pct",
    "[x]",
    "{a: b}",
    "|",
    ">",
    "?",
    "'",
    '"',
    "it's",
    "---",
    "...",
    "Wait...",
    "Maria Lopez",
    "María José",
    "tab\there",
]


@pytest.mark.parametrize("value", MISREAD)
def test_misreadable_values_round_trip(value: str) -> None:
    text = f"---\nphone_hash: {H}\n---\nbody\n"
    out = vault.set_properties(text, {"name": value, "phone": value})
    meta, body = vault.split_frontmatter(out)
    assert meta["name"] == value
    assert meta["phone"] == value
    assert isinstance(meta["name"], str)
    assert body == "\nbody\n"
    assert vault.parse_caller(out).name == value.strip()
    assert out.count("\n") == text.count("\n") + 2  # one line each


@pytest.mark.parametrize("value", ["+15551234567", "no", "0123", "1" * 64, "", "2026-11-20", "true", "~"])
def test_misreadable_values_are_quoted(value: str) -> None:
    rendered = vault.yaml_scalar(value)
    assert rendered[:1] in {"'", '"'} and rendered[-1:] == rendered[:1]


@pytest.mark.parametrize("value", ["line one\nline two", "a\r\nb", "a\rb", "a\u2028b", "a\x85b", "a\u2029b", "x\n"])
def test_values_never_add_lines(value: str) -> None:
    text = f"---\nphone_hash: {H}\n---\n"
    out = vault.set_properties(text, {"name": value})
    assert len(out.splitlines()) == len(text.splitlines()) + 1
    assert vault.split_frontmatter(out)[0]["name"] == " ".join(value.split())


def test_yaml_scalar_non_strings() -> None:
    assert vault.yaml_scalar(True) == "true"
    assert vault.yaml_scalar(False) == "false"
    assert vault.yaml_scalar(7) == "7"
    assert vault.yaml_scalar(dt.date(2026, 1, 2)) == "2026-01-02"
    assert vault.yaml_scalar(H) == f'"{H}"'


# ---------------------------------------------------------------------------------------------
# New caller files


def test_new_caller_text_layout() -> None:
    text = vault.new_caller_text(H)
    assert text == (
        f'---\nphone_hash: "{H}"\nname: ""\naliases: []\ncall_count: 0\n---\n'
        "# Caller abababababab\n\n## Facts\n\n## Calls\n\n## Notes\n"
    )
    caller = vault.parse_caller(text)
    assert caller == Caller(phone_hash=H)


@pytest.mark.parametrize("name", ["Maria Lopez", "no", "0123", "O'Brien", "Maria: the one", "Yes", "#1 fan"])
def test_new_caller_text_reparses(name: str) -> None:
    digits = "1234567890" * 6 + "1234"
    text = vault.new_caller_text(digits, name=name, phone="+15551234567", calls=("2026-11-01", "2026-11-20"))
    caller = vault.parse_caller(text)
    assert caller.phone_hash == digits
    assert caller.name == name
    assert caller.aliases == (name,)
    assert (caller.call_count, caller.first_call, caller.last_call) == (0, "2026-11-01", "2026-11-20")
    meta, _ = vault.split_frontmatter(text)
    assert meta["phone"] == "+15551234567"
    assert meta["phone_hash"] == digits
    assert caller.facts == () and caller.calls == () and caller.notes == ()
    assert list(vault.sections(text)) == ["facts", "calls", "notes"]


def test_new_caller_title_is_one_line() -> None:
    text = vault.new_caller_text(H, name="Evil\n## Facts\n- injected")
    assert vault.parse_caller(text).facts == ()
    assert [line for line in text.splitlines() if line.startswith("#")] == [
        "# Evil ## Facts - injected",
        "## Facts",
        "## Calls",
        "## Notes",
    ]


# ---------------------------------------------------------------------------------------------
# The vault on disk


@pytest.fixture
def v(tmp_path: Path) -> Vault:
    root = tmp_path / "vault"
    (root / "callers").mkdir(parents=True)
    (root / "notes").mkdir()
    return Vault(root)


def tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_load_a_good_caller(v: Vault) -> None:
    data = HAND.encode()
    (v.root / "callers" / "Maria Lopez.md").write_bytes(data)
    loaded = v.load("callers/Maria Lopez.md")
    assert loaded is not None
    assert loaded.error is None
    assert loaded.kind == "caller"
    assert loaded.digest == hashlib.sha256(data).hexdigest()
    assert loaded.stat == v.stat("callers/Maria Lopez.md") is not None
    assert loaded.record == vault.parse_caller(HAND)


def test_load_missing_file_is_none(v: Vault) -> None:
    assert v.load("callers/nobody.md") is None
    assert v.stat("callers/nobody.md") is None


def test_load_broken_file_is_an_error_not_none(v: Vault) -> None:
    (v.root / "callers" / "x.md").write_text("---\nname: [\n---\n")
    loaded = v.load("callers/x.md")
    assert loaded is not None and loaded.record is None
    assert "not valid YAML" in (loaded.error or "")
    assert loaded.digest  # the bytes were read, so the watcher can tell when they change


def test_load_refuses_a_symlink(v: Vault, tmp_path: Path) -> None:
    outside = tmp_path / "secret.md"
    outside.write_text(f"---\nphone_hash: {H}\nname: Outside\n---\n")
    (v.root / "callers" / "link.md").symlink_to(outside)
    loaded = v.load("callers/link.md")
    assert loaded is not None
    assert loaded.record is None
    assert "link" in (loaded.error or "")
    # Also a link to a file inside the vault is not followed.
    (v.root / "callers" / "real.md").write_text(f"---\nphone_hash: {H}\n---\n")
    (v.root / "callers" / "alias.md").symlink_to(v.root / "callers" / "real.md")
    inside = v.load("callers/alias.md")
    assert inside is not None and inside.record is None and inside.error


def test_load_refuses_a_dangling_symlink_and_a_directory(v: Vault, tmp_path: Path) -> None:
    (v.root / "callers" / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    dangling = v.load("callers/dangling.md")
    assert dangling is not None and dangling.error  # never taken for a deletion
    (v.root / "callers" / "dir.md").mkdir()
    folder = v.load("callers/dir.md")
    assert folder is not None and folder.error


def test_load_refuses_an_oversized_file(v: Vault) -> None:
    big = f"---\nphone_hash: {H}\n---\n" + "x" * (vault.MAX_FILE_BYTES + 1)
    (v.root / "callers" / "big.md").write_text(big)
    loaded = v.load("callers/big.md")
    assert loaded is not None and loaded.record is None
    assert "1 MB" in (loaded.error or "")


def test_load_binary_and_latin1(v: Vault) -> None:
    (v.root / "callers" / "bin.md").write_bytes(b"\x00\x01\x02" * 10)
    (v.root / "callers" / "latin.md").write_bytes(f"---\nphone_hash: {H}\nname: Mar\u00eda\n---\n".encode("latin-1"))
    assert "binary" in (v.load("callers/bin.md").error or "")  # type: ignore[union-attr]
    assert "UTF-8" in (v.load("callers/latin.md").error or "")  # type: ignore[union-attr]


def test_write_text_is_atomic_and_recognised(v: Vault) -> None:
    target = v.root / "callers" / "maria.md"
    target.write_text("old\n")
    old_inode = target.stat().st_ino
    sha = v.write_text("callers/maria.md", HAND)
    assert target.read_bytes() == HAND.encode()
    assert sha == hashlib.sha256(HAND.encode()).hexdigest()
    assert target.stat().st_ino != old_inode  # replaced by rename, never rewritten in place
    assert tmp_files(v.root) == []
    assert v.is_own_write("callers/maria.md", sha)
    loaded = v.load("callers/maria.md")
    assert loaded is not None and v.is_own_write("callers/maria.md", loaded.digest)
    # A person's edit afterwards is not ours.
    target.write_text(HAND + "\n- more\n")
    edited = v.load("callers/maria.md")
    assert edited is not None and not v.is_own_write("callers/maria.md", edited.digest)
    assert not v.is_own_write("callers/other.md", sha)


def test_write_text_creates_folders_and_keeps_no_temp_file_on_failure(v: Vault) -> None:
    v.write_text("callers/deep/er/x.md", "hi\n")
    assert (v.root / "callers" / "deep" / "er" / "x.md").read_text() == "hi\n"
    (v.root / "callers" / "taken.md").mkdir()
    (v.root / "callers" / "taken.md" / "child").write_text("x")
    with pytest.raises(OSError):
        v.write_text("callers/taken.md", "data")
    assert tmp_files(v.root) == []


@pytest.mark.parametrize("relpath", ["../escape.md", "callers/../../escape.md", "/etc/passwd"])
def test_writes_outside_the_vault_are_refused(v: Vault, relpath: str) -> None:
    with pytest.raises(VaultFileError, match="outside"):
        v.write_text(relpath, "x")
    assert not (v.root.parent / "escape.md").exists()


def test_write_through_a_symlinked_folder_outside_is_refused(v: Vault, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (v.root / "callers" / "out").symlink_to(outside)
    with pytest.raises(VaultFileError):
        v.write_text("callers/out/x.md", "x")
    assert list(outside.iterdir()) == []


def test_update(v: Vault) -> None:
    seen: list[str | None] = []

    def create(current: str | None) -> str | None:
        seen.append(current)
        return vault.new_caller_text(H) if current is None else None

    result = v.update("callers/new.md", create)
    assert seen == [None]
    assert result is not None
    text, sha = result
    assert (v.root / "callers" / "new.md").read_text() == text == vault.new_caller_text(H)
    assert v.is_own_write("callers/new.md", sha)
    assert v.update("callers/new.md", create) is None  # the change had nothing to do
    assert v.update("callers/new.md", lambda t: t) is None  # unchanged text is not written
    result = v.update("callers/new.md", lambda t: vault.set_properties(t or "", {"call_count": 9}))
    assert result is not None
    assert vault.parse_caller((v.root / "callers" / "new.md").read_text()).call_count == 9
    assert v.is_own_write("callers/new.md", result[1])
    assert tmp_files(v.root) == []


def test_write_text_and_delete(v: Vault) -> None:
    assert not (v.root / "callers" / "m.md").exists()
    sha = v.write_text("callers/m.md", "hello\n")
    assert (v.root / "callers" / "m.md").read_text() == "hello\n"
    v.delete("callers/m.md")
    assert not (v.root / "callers" / "m.md").exists()
    assert not v.is_own_write("callers/m.md", sha)
    v.delete("callers/m.md")  # deleting twice is fine


def test_loaded_matches_load(v: Vault) -> None:
    sha = v.write_text("callers/m.md", HAND)
    assert v.loaded("callers/m.md", HAND, sha) == v.load("callers/m.md")
    broken = v.loaded("callers/b.md", "---\nname: x\n---\n", "0" * 64)
    assert broken.record is None and "phone_hash" in (broken.error or "")


def test_scan_lists_only_vault_files_sorted_with_their_stat(v: Vault) -> None:
    for rel in [
        "soul.md",
        "callers/b.md",
        "callers/a.md",
        "callers/sub/c.md",
        "callers/.hidden/d.md",
        "callers/.x.md.abcd.mb.tmp",
        "callers/readme.txt",
        "notes/2026-11-25.md",
        "notes/2026-11-24.md",
        "notes/ideas.md",
        "other/e.md",
    ]:
        (v.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (v.root / rel).write_text("x")
    found = v.scan()
    assert list(found) == [
        "callers/a.md",
        "callers/b.md",
        "callers/sub/c.md",
        "notes/2026-11-24.md",
        "notes/2026-11-25.md",
        "soul.md",
    ]
    assert found["callers/a.md"] == v.stat("callers/a.md")


def test_ensure_layout_and_stale_temp_files(tmp_path: Path) -> None:
    v = Vault(tmp_path / "new")
    created = v.ensure_layout()
    assert set(created) == {"callers/.gitkeep", "notes/.gitkeep", "soul.md", ".gitignore"}
    assert isinstance(vault.parse("soul.md", (v.root / "soul.md").read_bytes()), Soul)
    assert "*.tmp" in (v.root / ".gitignore").read_text()
    assert v.ensure_layout() == []  # idempotent
    (v.root / "callers" / ".m.md.1a2b3c4d.mb.tmp").write_text("half")
    (v.root / ".soul.md.00000000.mb.tmp").write_text("half")
    (v.root / "callers" / "keep.md").write_text("x")
    assert v.remove_stale_temp_files() == 2
    assert tmp_files(v.root) == []
    assert (v.root / "callers" / "keep.md").exists()


def test_phone_hash_key(tmp_path: Path) -> None:
    v = Vault(tmp_path / "vault")
    v.root.mkdir()
    assert v.phone_hash_key("configured-key-123") == (b"configured-key-123", False)
    key, generated = v.phone_hash_key(None)
    assert generated
    assert len(key) == 64
    path = v.root / ".git" / vault.KEY_FILE
    assert path.is_file()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert v.phone_hash_key(None) == (key, True)  # the same key next time
    assert Vault(v.root).phone_hash_key("") == (key, True)


def test_relpath_and_note_path(v: Vault, tmp_path: Path) -> None:
    assert v.relpath(v.root / "callers" / "a.md") == "callers/a.md"
    assert v.relpath(tmp_path / "elsewhere.md") is None
    assert Vault.note_path("2026-11-25") == "notes/2026-11-25.md"
    assert v.new_caller_path(H) == "callers/abababababab.md"


def test_next_seq_increases(v: Vault) -> None:
    a, b = v.next_seq(), v.next_seq()
    assert b > a


def test_update_keeps_a_byte_order_mark(v: Vault) -> None:
    path = v.root / "callers" / "bom.md"
    path.write_bytes(codecs.BOM_UTF8 + HAND.encode())
    assert v.update("callers/bom.md", lambda t: vault.append_to_section(t or "", "Facts", "- New")) is not None
    data = path.read_bytes()
    assert data.startswith(codecs.BOM_UTF8) and not data.startswith(codecs.BOM_UTF8 * 2)
    assert data[3:].decode() == vault.append_to_section(HAND, "Facts", "- New")
