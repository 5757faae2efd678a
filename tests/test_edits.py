"""edits.py: surgical, byte-preserving edits of vault file text (SPEC §2)."""

from __future__ import annotations

import datetime as dt

import pytest

from server.edits import append_to_section, new_caller_text, remove_properties, set_properties, yaml_scalar
from server.parse import VaultFileError, parse_caller, sections, split_frontmatter
from server.records import Caller, CallLine
from tests.vault_samples import HAND, H, changed_lines

# ---------------------------------------------------------------------------------------------
# Surgical edits: only the lines a change is about, every other byte as it was


def test_set_properties_touches_only_its_lines() -> None:
    out = set_properties(HAND, {"call_count": 4, "last_call": dt.date(2026, 11, 25)})
    expected = HAND.replace('"call_count": 3\n', "call_count: 4\n").replace(
        "last_call: 2026-11-20\n", "last_call: 2026-11-25\n"
    )
    assert out == expected
    assert [(i, a, b) for i, a, b in changed_lines(HAND, out)] == [
        (8, '"call_count": 3\n', "call_count: 4\n"),
        (9, "last_call: 2026-11-20\n", "last_call: 2026-11-25\n"),
    ]
    caller = parse_caller(out)
    assert (caller.call_count, caller.last_call, caller.first_call) == (4, "2026-11-25", "2026-11-01")
    assert caller.extra == parse_caller(HAND).extra


def test_set_properties_replaces_a_whole_multiline_entry() -> None:
    out = set_properties(HAND, {"aliases": ["Maria Lopez", "no"], "favourite_colour": "green"})
    expected = HAND.replace('aliases:\n- Maria\n- "M. Lopez"\n', "aliases:\n  - Maria Lopez\n  - 'no'\n").replace(
        "favourite_colour: >-\n  deep\n  blue\n", "favourite_colour: green\n"
    )
    assert out == expected
    caller = parse_caller(out)
    assert caller.aliases == ("Maria Lopez", "no")
    assert caller.extra["favourite_colour"] == "green"


def test_remove_properties_takes_out_only_each_keys_own_lines() -> None:
    out = remove_properties(HAND, ["aliases", "favourite_colour", "call_count", "no_such_key"])
    expected = HAND.replace('aliases:\n- Maria\n- "M. Lopez"\n', "").replace(
        "favourite_colour: >-\n  deep\n  blue\n", ""
    )
    assert out == expected.replace('"call_count": 3\n', "")
    meta, body = split_frontmatter(out)
    assert "aliases" not in meta and "call_count" not in meta and meta["name"] == "Maria Lopez"
    assert body == split_frontmatter(HAND)[1]
    assert remove_properties("# no frontmatter\n", ["name"]) == "# no frontmatter\n"
    with pytest.raises(VaultFileError):
        remove_properties("---\nname: x\n", ["name"])


def test_set_properties_writes_none_as_an_empty_property() -> None:
    out = set_properties(f"---\nphone_hash: {H}\nvoice_id: abc\n---\n", {"voice_id": None})
    assert out == f"---\nphone_hash: {H}\nvoice_id:\n---\n"
    assert split_frontmatter(out)[0]["voice_id"] is None


def test_set_properties_adds_new_keys_at_the_end_of_the_block() -> None:
    out = set_properties(HAND, {"language": "es", "phone": "+15551234567"})
    expected = HAND.replace(
        'business_name: "Lopez & Sons"\n---\n',
        "business_name: \"Lopez & Sons\"\nlanguage: es\nphone: '+15551234567'\n---\n",
    )
    assert out == expected
    meta, _ = split_frontmatter(out)
    assert meta["phone"] == "+15551234567"
    assert parse_caller(out).language == "es"


def test_fill_an_empty_name() -> None:
    text = f"---\nphone_hash: {H}\nname:\naliases: []\ncall_count: 1 # first call\n---\n# Caller abababababab\n"
    out = set_properties(text, {"name": "Maria Lopez", "aliases": ["Maria Lopez"]})
    assert out == (
        f"---\nphone_hash: {H}\nname: Maria Lopez\naliases:\n  - Maria Lopez\ncall_count: 1 # first call\n"
        "---\n# Caller abababababab\n"
    )
    assert parse_caller(out).name == "Maria Lopez"
    assert set_properties(text, {"aliases": []}) == text  # an empty list stays `[]`


def test_set_properties_same_value_is_identical() -> None:
    text = f"---\nphone_hash: {H}\ncall_count: 4\n---\nbody\n"
    assert set_properties(text, {"call_count": 4}) == text


def test_set_properties_does_not_match_a_longer_key_or_a_comment() -> None:
    text = f"---\nphone_hash: {H}\n# name: old comment\nname_alt: keep\n  # indented comment stays\nname2: x\n---\n"
    out = set_properties(text, {"name": "Ana"})
    assert out == text.replace("name2: x\n", "name2: x\nname: Ana\n")


def test_set_properties_without_frontmatter_prepends_one() -> None:
    body = "# Maria\n\n## Facts\n- likes tea"
    out = set_properties(body, {"phone_hash": H, "call_count": 0})
    assert out == f'---\nphone_hash: "{H}"\ncall_count: 0\n---\n' + body
    assert parse_caller(out).facts == ("likes tea",)


def test_set_properties_on_unclosed_frontmatter_is_an_error() -> None:
    with pytest.raises(VaultFileError, match="closing"):
        set_properties(f"---\nphone_hash: {H}\nname: Maria\n", {"call_count": 1})


def test_set_properties_ignores_a_horizontal_rule_in_the_body() -> None:
    text = f"---\nphone_hash: {H}\ncall_count: 1\n---\nabove\n\n---\n\ncall_count: not a property\n"
    out = set_properties(text, {"call_count": 2, "new_key": "v"})
    assert out == f"---\nphone_hash: {H}\ncall_count: 2\nnew_key: v\n---\nabove\n\n---\n\ncall_count: not a property\n"


def test_append_to_existing_sections() -> None:
    out = append_to_section(HAND, "Facts", "- Allergic to penicillin")
    assert out == HAND.replace(
        "- Has a dog named Rex\n", "- Has a dog named Rex\n- Allergic to penicillin\n"
    )  # after the last item, before the blank line
    out = append_to_section(out, "calls", "- 2026-11-25 09:00 · Booked a cleaning. (conv_new)")
    out = append_to_section(out, "Notes", "- 2026-11-25: prefers email")
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
    caller = parse_caller(out)
    assert caller.facts[-1] == "Allergic to penicillin"
    assert caller.calls[-1] == CallLine.of("2026-11-25", "Booked a cleaning.", "conv_new", "09:00")
    assert caller.notes == ("Free text a person wrote.", "- 2026-11-25: prefers email")


def test_append_creates_a_missing_section_at_the_end() -> None:
    out = append_to_section(HAND, "Reminders", "- call back Monday")
    assert out == HAND + "\n\n## Reminders\n- call back Monday\n"
    text = f"---\nphone_hash: {H}\n---\n# Maria\n"
    assert append_to_section(text, "Facts", "- a") == text + "\n## Facts\n- a\n"
    # A level-1 heading of the same name is not the section.
    text = f"---\nphone_hash: {H}\n---\n# Facts\n"
    assert append_to_section(text, "Facts", "- a") == text + "\n## Facts\n- a\n"


def test_append_to_an_empty_section_and_to_one_without_newline() -> None:
    fresh = new_caller_text(H)
    out = append_to_section(fresh, "Facts", "- first")
    assert out == fresh.replace("## Facts\n\n", "## Facts\n- first\n\n")
    text = f"---\nphone_hash: {H}\n---\n## Notes"
    assert append_to_section(text, "Notes", "- a") == text + "\n- a\n"


def test_append_ignores_headings_inside_the_frontmatter() -> None:
    text = f"---\nphone_hash: {H}\n## Facts: not a heading\n---\nbody\n"
    assert append_to_section(text, "Facts", "- a") == text + "\n## Facts\n- a\n"


def test_append_to_a_heading_with_closing_hashes_and_other_case() -> None:
    text = f"---\nphone_hash: {H}\n---\n## facts ##\n- x\n\n## Calls\n"
    assert append_to_section(text, "Facts", "- a") == text.replace("- x\n", "- x\n- a\n")


def test_crlf_file_stays_crlf_and_only_intended_lines_change() -> None:
    crlf = HAND.replace("\n", "\r\n")
    out = set_properties(crlf, {"call_count": 4, "last_call": dt.date(2026, 11, 25), "voice_id": "v1"})
    out = append_to_section(out, "Facts", "- Allergic to penicillin")
    out = append_to_section(out, "Notes", "- 2026-11-25: hi")
    out = append_to_section(out, "Reminders", "- Monday")
    lf = set_properties(HAND, {"call_count": 4, "last_call": dt.date(2026, 11, 25), "voice_id": "v1"})
    lf = append_to_section(lf, "Facts", "- Allergic to penicillin")
    lf = append_to_section(lf, "Notes", "- 2026-11-25: hi")
    lf = append_to_section(lf, "Reminders", "- Monday")
    assert out == lf.replace("\n", "\r\n")
    assert "\n" not in out.replace("\r\n", "")  # no bare LF anywhere
    assert parse_caller(out) == parse_caller(lf)


def test_full_write_cycle_keeps_every_untouched_byte() -> None:
    """The edits a call makes, in sequence, leave everything else byte-for-byte as the person wrote it."""
    out = set_properties(HAND, {"call_count": 4, "last_call": dt.date(2026, 11, 25)})
    out = append_to_section(out, "Calls", "- 2026-11-25 09:00 · Booked. (conv_2)")
    out = set_properties(out, {"call_count": 5})
    out = append_to_section(out, "Facts", "- Has a cat too")
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
    out = set_properties(text, {"name": value, "phone": value})
    meta, body = split_frontmatter(out)
    assert meta["name"] == value
    assert meta["phone"] == value
    assert isinstance(meta["name"], str)
    assert body == "body\n"  # the lines after the closing fence, untouched
    assert parse_caller(out).name == value.strip()
    assert out.count("\n") == text.count("\n") + 2  # one line each


@pytest.mark.parametrize("value", ["+15551234567", "no", "0123", "1" * 64, "", "2026-11-20", "true", "~"])
def test_misreadable_values_are_quoted(value: str) -> None:
    rendered = yaml_scalar(value)
    assert rendered[:1] in {"'", '"'} and rendered[-1:] == rendered[:1]


@pytest.mark.parametrize("value", ["line one\nline two", "a\r\nb", "a\rb", "a\u2028b", "a\x85b", "a\u2029b", "x\n"])
def test_values_never_add_lines(value: str) -> None:
    text = f"---\nphone_hash: {H}\n---\n"
    out = set_properties(text, {"name": value})
    assert len(out.splitlines()) == len(text.splitlines()) + 1
    assert split_frontmatter(out)[0]["name"] == " ".join(value.split())


def test_yaml_scalar_non_strings() -> None:
    assert yaml_scalar(True) == "true"
    assert yaml_scalar(False) == "false"
    assert yaml_scalar(7) == "7"
    assert yaml_scalar(dt.date(2026, 1, 2)) == "2026-01-02"
    assert yaml_scalar(H) == f'"{H}"'


# ---------------------------------------------------------------------------------------------
# New caller files


def test_new_caller_text_layout() -> None:
    text = new_caller_text(H)
    assert text == (
        f'---\nphone_hash: "{H}"\nname: ""\naliases: []\ncall_count: 0\n---\n'
        "# Caller abababababab\n\n## Facts\n\n## Calls\n\n## Notes\n"
    )
    caller = parse_caller(text)
    assert caller == Caller(phone_hash=H)


@pytest.mark.parametrize("name", ["Maria Lopez", "no", "0123", "O'Brien", "Maria: the one", "Yes", "#1 fan"])
def test_new_caller_text_reparses(name: str) -> None:
    digits = "1234567890" * 6 + "1234"
    text = new_caller_text(digits, name=name, phone="+15551234567", calls=("2026-11-01", "2026-11-20"))
    caller = parse_caller(text)
    assert caller.phone_hash == digits
    assert caller.name == name
    assert caller.aliases == (name,)
    assert (caller.call_count, caller.first_call, caller.last_call) == (0, "2026-11-01", "2026-11-20")
    meta, _ = split_frontmatter(text)
    assert meta["phone"] == "+15551234567"
    assert meta["phone_hash"] == digits
    assert caller.facts == () and caller.calls == () and caller.notes == ()
    assert list(sections(text)) == ["facts", "calls", "notes"]


def test_new_caller_title_is_one_line() -> None:
    text = new_caller_text(H, name="Evil\n## Facts\n- injected")
    assert parse_caller(text).facts == ()
    assert [line for line in text.splitlines() if line.startswith("#")] == [
        "# Evil ## Facts - injected",
        "## Facts",
        "## Calls",
        "## Notes",
    ]


# Edits and the parser find the frontmatter with the same helper, so they agree on where it ends.
@pytest.mark.parametrize(
    "text",
    [
        f"---\nphone_hash: {H}\n---\n# Maria\n",
        f"---\nphone_hash: {H}\n--- \n# Maria\n\n---\n\nnot: a property\n",
        f"---\r\nphone_hash: {H}\r\n---\r\n# Maria\r\n",
        "# No frontmatter\n\n---\n\nnot: a property\n",
        "----\nnot: a fence\n----\n# Rules, not fences\n",
    ],
)
def test_edits_and_the_parser_agree_on_the_frontmatter(text: str) -> None:
    out = set_properties(text, {"call_count": 7})
    meta, body = split_frontmatter(out)
    assert meta["call_count"] == 7
    assert body == split_frontmatter(text)[1]
    appended = append_to_section(out, "Facts", "- x")
    assert split_frontmatter(appended)[0] == meta
    assert sections(split_frontmatter(appended)[1])["facts"] == ["- x"]


def test_a_yaml_document_end_does_not_close_the_block_for_edits() -> None:
    with pytest.raises(VaultFileError, match="closing"):
        set_properties(f"---\nphone_hash: {H}\n...\n# Maria\n", {"call_count": 1})
