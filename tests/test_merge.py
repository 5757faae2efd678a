"""merge.py: the merge driver's rules (SPEC §11), one table case per rule, then properties with git's merge."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, event, given, settings

from server import changes, merge
from server.edits import append_to_section, new_caller_text, set_properties
from server.gitrun import GitRunner
from server.markdown import Kind
from server.merge import Clean, Conflict, MergeResult, Method
from server.mergefile import git_prose_merge
from server.parse import parse_caller, sections, split_frontmatter
from tests.merge_samples import Model, fake_prose, three_versions
from tests.vault_samples import HAND, H


def test_the_stand_in_merges_like_diff3() -> None:
    assert fake_prose("a\nb\nc\n", "A\nb\nc\n", "a\nb\nC\n") == [Clean(("A\n",)), Clean(("b\n",)), Clean(("C\n",))]
    assert fake_prose("a\nb\n", "a\nX\n", "a\nY\n") == [Clean(("a\n",)), Conflict(("b\n",), ("X\n",), ("Y\n",))]


# ---------------------------------------------------------------------------------------------
# The table

BASE = f"""---
phone_hash: "{H}"
name: Maria Lopez
aliases:
  - Maria Lopez
  - Mary
call_count: 3
first_call: 2026-11-01
last_call: 2026-11-20
language: en
---
# Maria Lopez

## Facts
- Prefers morning appointments
- Has a dog named Rex

## Calls
- 2026-11-20 14:02 · Asked to move her dentist appointment to Friday. (conv_8901k5zv)

## Notes
Free text a person wrote.
Kept as it is and shown to the agent.
She asked us to call back after lunch.
"""

NOTE = """# 2026-11-25

The office closes at 3pm today.

- Dr. Kim is out
- Parking lot repaved

Call Ana for urgent matters.
"""

SOUL = """---
first_message: Hello, you have reached Lopez Dental.
first_message_returning: Welcome back, {{name}}.
clinic: Lopez Dental
---
You are the receptionist of a dental clinic.

Be brief and kind.
"""

REX = "- Has a dog named Rex\n"
CALL = "(conv_8901k5zv)\n"


def ed(text: str, *pairs: tuple[str, str]) -> str:
    """`text` with each (old, new) replaced once; every old must be there."""
    for old, new in pairs:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


CASES = [
    pytest.param(
        BASE,
        ed(BASE, (REX, REX + "- Likes tea\n")),
        ed(BASE, (REX, REX + "- Allergic to penicillin\n")),
        ed(BASE, (REX, REX + "- Likes tea\n- Allergic to penicillin\n")),
        (),
        0,
        id="facts: both sides' new facts, ours first",
    ),
    pytest.param(
        BASE,
        ed(BASE, (CALL, CALL + "- 2026-11-22 09:00 · Bill question. (conv_a)\n")),
        ed(BASE, (CALL, CALL + "- 2026-11-21 10:00 · Wants a callback. (conv_b)\n")),
        ed(
            BASE,
            (
                CALL,
                CALL
                + "- 2026-11-22 09:00 · Bill question. (conv_a)\n- 2026-11-21 10:00 · Wants a callback. (conv_b)\n",
            ),
        ),
        (),
        0,
        id="calls: both sides' new calls",
    ),
    pytest.param(
        BASE,
        ed(BASE, (REX, REX + "- Likes tea\n")),
        ed(BASE, ("## Facts\n", "## Facts\n- Likes tea\n"), (REX, REX + "- Has two cats\n")),
        ed(BASE, ("## Facts\n", "## Facts\n- Likes tea\n"), (REX, REX + "- Has two cats\n")),
        (),
        0,
        id="an identical line both added, at different places, is kept once",
    ),
    pytest.param(
        BASE,
        ed(BASE, (REX, REX + "- Likes tea\n")),
        ed(BASE, ("- Prefers morning appointments\n", "")),
        ed(BASE, ("- Prefers morning appointments\n", ""), (REX, REX + "- Likes tea\n")),
        (),
        0,
        id="a fact deleted on one side stays deleted; the other side's new fact is kept",
    ),
    pytest.param(
        BASE,
        ed(BASE, (REX, "- Has a dog named Rex (a beagle)\n")),
        ed(BASE, (REX, REX + "- Likes tea\n")),
        ed(BASE, (REX, "- Has a dog named Rex (a beagle)\n- Likes tea\n")),
        (),
        0,
        id="a fact reworded on one side beside a new fact on the other: both, the old wording gone",
    ),
    pytest.param(
        BASE,
        ed(BASE, ("call_count: 3", "call_count: 4")),
        ed(BASE, ("call_count: 3", "call_count: 5")),
        ed(BASE, ("call_count: 3", "call_count: 6")),
        (),
        0,
        id="call_count: both sides' increments added",
    ),
    pytest.param(
        BASE,
        ed(BASE, ("call_count: 3", "call_count: 4")),
        ed(BASE, (REX, REX + "- Likes tea\n")),
        ed(BASE, ("call_count: 3", "call_count: 4"), (REX, REX + "- Likes tea\n")),
        (),
        0,
        id="call_count: one side's increment",
    ),
    pytest.param(
        BASE,
        ed(
            BASE,
            ("first_call: 2026-11-01", "first_call: 2026-10-20"),
            ("last_call: 2026-11-20", "last_call: 2026-11-22"),
        ),
        ed(
            BASE,
            ("first_call: 2026-11-01", "first_call: 2026-10-05"),
            ("last_call: 2026-11-20", "last_call: 2026-11-21"),
        ),
        ed(
            BASE,
            ("first_call: 2026-11-01", "first_call: 2026-10-05"),
            ("last_call: 2026-11-20", "last_call: 2026-11-22"),
        ),
        (),
        0,
        id="first_call the earliest, last_call the latest",
    ),
    pytest.param(
        BASE,
        ed(BASE, (REX, REX + "- Likes tea\n")),
        ed(BASE, ("first_call: 2026-11-01", "first_call: 2026-11-03")),
        ed(BASE, ("first_call: 2026-11-01", "first_call: 2026-11-03"), (REX, REX + "- Likes tea\n")),
        (),
        0,
        id="first_call corrected on one side only: that side's",
    ),
    pytest.param(
        BASE,
        ed(BASE, ("  - Mary\n", "  - Mary\n  - Maria L.\n")),
        ed(BASE, ("  - Mary\n", "  - M. Lopez\n")),
        ed(BASE, ("  - Mary\n", "  - Maria L.\n  - M. Lopez\n")),
        (),
        0,
        id="aliases: a union, one side's removal kept",
    ),
    pytest.param(
        BASE,
        ed(BASE, (REX, REX + "- Likes tea\n")),
        ed(BASE, ("language: en", "language: es")),
        ed(BASE, ("language: en", "language: es"), (REX, REX + "- Likes tea\n")),
        (),
        0,
        id="another key changed on one side: that side's value",
    ),
    pytest.param(
        BASE,
        ed(BASE, ("name: Maria Lopez", "name: Maria L."), ("language: en", "language: fr")),
        ed(BASE, ("name: Maria Lopez", "name: Maria Lopez-Garcia"), ("language: en", "language: fr")),
        ed(BASE, ("name: Maria Lopez", "name: Maria Lopez-Garcia"), ("language: en", "language: fr")),
        ("name",),
        0,
        id="a key both sides changed differently: the remote's value, reported",
    ),
    pytest.param(
        BASE,
        ed(BASE, (REX, REX + "- Likes tea\n")),
        ed(BASE, ("language: en\n", ""), ("last_call: 2026-11-20\n", "last_call: 2026-11-20\nvoice_id: v123\n")),
        ed(BASE, ("language: en\n", "voice_id: v123\n"), (REX, REX + "- Likes tea\n")),
        (),
        0,
        id="a key deleted on one side is deleted; a key added on the other is added, at the end",
    ),
    pytest.param(
        BASE,
        ed(BASE, ("Free text a person wrote.", "Free text Ana wrote.")),
        ed(BASE, ("call back after lunch.", "call back before noon.")),
        ed(BASE, ("Free text a person wrote.", "Free text Ana wrote."), ("after lunch.", "before noon.")),
        (),
        0,
        id="prose: changes to different lines merge cleanly",
    ),
    pytest.param(
        BASE,
        ed(BASE, ("Kept as it is and shown to the agent.", "Kept as it is, read to the agent.")),
        ed(BASE, ("Kept as it is and shown to the agent.", "Shown to the agent on every call.")),
        ed(
            BASE,
            (
                "Kept as it is and shown to the agent.\n",
                "Kept as it is, read to the agent.\nShown to the agent on every call.\n",
            ),
        ),
        (),
        1,
        id="prose: one line changed two ways, both versions kept, reported",
    ),
    pytest.param(
        BASE,
        BASE + "- 2026-11-25: Prefers e-mail.\n",
        BASE + "- 2026-11-26: Moved to Oakland.\n",
        BASE + "- 2026-11-25: Prefers e-mail.\n- 2026-11-26: Moved to Oakland.\n",
        (),
        0,
        id="prose: both sides adding notes at the end is no conflict",
    ),
    pytest.param(
        BASE.replace("\n", "\r\n"),
        ed(BASE, (REX, REX + "- Likes tea\n"), ("call_count: 3", "call_count: 4")).replace("\n", "\r\n"),
        ed(BASE, (CALL, CALL + "- 2026-11-21 10:00 · Wants a callback. (conv_b)\n")).replace("\n", "\r\n"),
        ed(
            BASE,
            (REX, REX + "- Likes tea\n"),
            ("call_count: 3", "call_count: 4"),
            (CALL, CALL + "- 2026-11-21 10:00 · Wants a callback. (conv_b)\n"),
        ).replace("\n", "\r\n"),
        (),
        0,
        id="CRLF files stay CRLF",
    ),
    pytest.param(
        BASE,
        ed(BASE, (REX, REX + "- Likes tea\n")),
        ed(BASE, ("call_count: 3", "call_count: 4")).replace("\n", "\r\n"),
        ed(BASE, (REX, REX + "- Likes tea\n"), ("call_count: 3", "call_count: 4")),
        (),
        0,
        id="a CRLF side against LF ones: line by line, in ours' line endings",
    ),
    pytest.param(
        BASE.split("---\n")[2],
        ed(BASE.split("---\n")[2], (REX, REX + "- Likes tea\n")),
        ed(BASE.split("---\n")[2], (REX, REX + "- Allergic to penicillin\n"), ("- Prefers morning appointments\n", "")),
        ed(
            BASE.split("---\n")[2],
            (REX, REX + "- Likes tea\n- Allergic to penicillin\n"),
            ("- Prefers morning appointments\n", ""),
        ),
        (),
        0,
        id="a file without frontmatter",
    ),
    pytest.param(
        NOTE,
        ed(
            NOTE,
            ("closes at 3pm", "closes at 2pm"),
            ("- Parking lot repaved\n", "- Parking lot repaved\n- Fire drill at 11\n"),
        ),
        ed(
            NOTE, ("- Dr. Kim is out\n", ""), ("- Parking lot repaved\n", "- Parking lot repaved\n- New phone system\n")
        ),
        ed(
            NOTE,
            ("closes at 3pm", "closes at 2pm"),
            ("- Dr. Kim is out\n", ""),
            ("- Parking lot repaved\n", "- Parking lot repaved\n- Fire drill at 11\n- New phone system\n"),
        ),
        (),
        0,
        id="daily note: bullets a union, a deleted one gone, prose around them merged",
    ),
    pytest.param(
        NOTE,
        ed(
            NOTE,
            ("- Dr. Kim is out\n", "- Dr. Kim is out until 2pm\n"),
            ("urgent matters.", "urgent matters (ext. 12)."),
        ),
        ed(
            NOTE,
            ("- Parking lot repaved\n", "- Parking lot repaved\n- New phone system\n"),
            ("urgent", "anything urgent"),
        ),
        ed(
            NOTE,
            ("- Dr. Kim is out\n", "- Dr. Kim is out until 2pm\n"),
            ("- Parking lot repaved\n", "- Parking lot repaved\n- New phone system\n"),
            (
                "Call Ana for urgent matters.\n",
                "Call Ana for urgent matters (ext. 12).\nCall Ana for anything urgent matters.\n",
            ),
        ),
        (),
        1,
        id="daily note: a bullet reworded beside a new one; a prose line changed twice kept twice",
    ),
    pytest.param(
        SOUL,
        ed(SOUL, ("first_message: Hello,", "first_message: Hi,"), ("Be brief and kind.", "Be brief, kind and calm.")),
        ed(SOUL, ("clinic: Lopez Dental", "clinic: Lopez Family Dental"), ("dental clinic.", "family dental clinic.")),
        ed(
            SOUL,
            ("first_message: Hello,", "first_message: Hi,"),
            ("clinic: Lopez Dental", "clinic: Lopez Family Dental"),
            ("dental clinic.", "family dental clinic."),
            ("Be brief and kind.", "Be brief, kind and calm."),
        ),
        (),
        0,
        id="soul: keys by key, the body as prose",
    ),
]


@pytest.fixture(scope="module")
def git_prose(tmp_path_factory: pytest.TempPathFactory) -> merge.ProseMerge:
    """git's own three-way merge, as the driver runs it."""
    return git_prose_merge(GitRunner(tmp_path_factory.mktemp("merge"), "memory-bridge", "memory-bridge@localhost"))


@pytest.mark.parametrize(("base", "ours", "theirs", "expected", "remote", "twice"), CASES)
def test_rule(base: str, ours: str, theirs: str, expected: str, remote: tuple[str, ...], twice: int) -> None:
    result = merge.merge(base, ours, theirs, _kind(base), fake_prose)
    assert result.text == expected
    assert (result.remote_keys, result.prose_kept_twice, result.method) == (remote, twice, Method.RULES)
    assert result.conflicted == bool(remote or twice)


@pytest.mark.parametrize(("base", "ours", "theirs", "expected", "remote", "twice"), CASES)
def test_git_merges_each_case_as_the_stand_in_does(
    base: str, ours: str, theirs: str, expected: str, remote: tuple[str, ...], twice: int, git_prose: merge.ProseMerge
) -> None:
    assert merge.merge(base, ours, theirs, _kind(base), git_prose) == MergeResult(expected, remote, twice)


def _kind(base: str) -> Kind:
    return Kind.NOTE if base.startswith("# 2026") else Kind.SOUL if "clinic:" in base else Kind.CALLER


def test_broken_yaml_on_one_side_merges_the_whole_file_as_prose() -> None:
    ours = ed(BASE, ("call_count: 3", "call_count: 4"), (REX, REX + "- Likes tea\n"))
    theirs = ed(BASE, ("name: Maria Lopez", "name: [Maria"), (REX, REX + "- Allergic to penicillin\n"))
    result = merge.merge(BASE, ours, theirs, Kind.CALLER, fake_prose)
    assert result == MergeResult(
        ed(
            BASE,
            ("name: Maria Lopez", "name: [Maria"),
            ("call_count: 3", "call_count: 4"),
            (REX, REX + "- Likes tea\n- Allergic to penicillin\n"),
        ),
        method=Method.WHOLE_FILE_AS_PROSE,
    )


def test_an_unclosed_frontmatter_conflict_keeps_both_versions_without_markers() -> None:
    ours = ed(BASE, ("name: Maria Lopez", "name: Maria L."))
    theirs = ed(BASE, ("name: Maria Lopez", "name: Maria Lopez-Garcia"), ("---\n# Maria", "# Maria"))
    result = merge.merge(BASE, ours, theirs, Kind.CALLER, fake_prose)
    assert result == MergeResult(
        ed(BASE, ("name: Maria Lopez\n", "name: Maria L.\nname: Maria Lopez-Garcia\n"), ("---\n# Maria", "# Maria")),
        prose_kept_twice=1,
        method=Method.WHOLE_FILE_AS_PROSE,
    )


def test_a_value_the_edits_cannot_write_back_merges_the_file_as_prose() -> None:
    ours = ed(BASE, ("call_count: 3", "call_count: 4"))
    theirs = ed(BASE, ("language: en\n", "language: en\naddress:\n  street: Main St\n"))
    result = merge.merge(BASE, ours, theirs, Kind.CALLER, fake_prose)
    assert result.method is Method.WHOLE_FILE_AS_PROSE
    assert result.text == ed(theirs, ("call_count: 3", "call_count: 4"))


def test_ours_bytes_are_kept_but_for_the_keys_the_rules_change() -> None:
    call = "- 2026-11-25 09:30 · Confirmed Friday. (conv_c)"
    ours = append_to_section(HAND, "Facts", "- Likes tea")  # a person's edit of their own hand-kept file
    theirs = append_to_section(set_properties(HAND, {"call_count": 4}), "Calls", call)  # a recorded call
    result = merge.merge(HAND, ours, theirs, Kind.CALLER, fake_prose)
    assert result == MergeResult(append_to_section(set_properties(ours, {"call_count": 4}), "Calls", call))
    assert result.text.count("\n") == HAND.count("\n") + 2  # the two new lines; no line break at the end, as before
    assert "# Maria's card, kept by Ana at the front desk\n" in result.text
    assert parse_caller(result.text).call_count == 4


def test_a_byte_order_mark_stays_and_does_not_hide_the_frontmatter() -> None:
    ours = "\ufeff" + ed(BASE, ("call_count: 3", "call_count: 4"))
    theirs = "\ufeff" + ed(BASE, ("call_count: 3", "call_count: 5"))
    result = merge.merge("\ufeff" + BASE, ours, theirs, Kind.CALLER, fake_prose)
    assert result == MergeResult("\ufeff" + ed(BASE, ("call_count: 3", "call_count: 6")))


def test_no_line_break_at_the_end_on_either_side_means_none_after_the_merge() -> None:
    result = merge.merge(
        BASE.rstrip("\n"), ed(BASE, (REX, REX + "- Likes tea\n")).rstrip("\n"), BASE, Kind.CALLER, fake_prose
    )
    assert result.text == ed(BASE, (REX, REX + "- Likes tea\n"))  # theirs ends with one
    result = merge.merge(
        BASE, ed(BASE, (REX, REX + "- Likes tea\n")).rstrip("\n"), BASE.rstrip("\n"), Kind.CALLER, fake_prose
    )
    assert result.text == ed(BASE, (REX, REX + "- Likes tea\n")).rstrip("\n")


def test_both_sides_creating_a_caller_add_their_counts_and_union_their_lines() -> None:
    # git merges a file both branches added from an empty base.
    ours = ed(BASE, (REX, REX + "- Likes tea\n"), ("call_count: 3", "call_count: 1"))
    theirs = ed(BASE, ("call_count: 3", "call_count: 2"), ("first_call: 2026-11-01", "first_call: 2026-10-30"))
    result = merge.merge("", ours, theirs, Kind.CALLER, fake_prose)
    assert result.remote_keys == ()
    caller = parse_caller(result.text)
    assert (caller.call_count, caller.first_call) == (3, "2026-10-30")
    assert caller.facts == ("Prefers morning appointments", "Has a dog named Rex", "Likes tea")


def test_the_services_own_writes_on_two_replicas_merge_into_one(git_prose: merge.ProseMerge) -> None:
    # Two replicas each recorded a call and a fact of a new caller, on the empty sections a new file has.
    base = new_caller_text(H, "Maria Lopez", calls=("2026-11-20", "2026-11-20"))
    sides = []
    for fact, when, conv, count in (("Likes tea", 9, "conv_a", 1), ("Has a dog", 10, "conv_b", 1)):
        text = changes.with_call(base, changes.call_line(dt.datetime(2026, 11, 21, when), "Called.", conv), {}, set())
        sides.append(
            changes.with_fact(set_properties(text, {"call_count": count, "last_call": dt.date(2026, 11, 21)}), fact)
        )
    result = merge.merge(base, sides[0], sides[1], Kind.CALLER, git_prose)
    assert result == MergeResult(
        base.replace("call_count: 0", "call_count: 2")
        .replace("last_call: 2026-11-20", "last_call: 2026-11-21")
        .replace("## Facts\n", "## Facts\n- Likes tea\n- Has a dog\n")
        .replace(
            "## Calls\n", "## Calls\n- 2026-11-21 09:00 · Called. (conv_a)\n- 2026-11-21 10:00 · Called. (conv_b)\n"
        )
    )


def test_a_key_both_changed_is_reported_for_any_file_kind() -> None:
    ours = ed(SOUL, ("clinic: Lopez Dental", "clinic: Lopez Dentistry"))
    theirs = ed(SOUL, ("clinic: Lopez Dental", "clinic: Lopez Family Dental"))
    assert merge.merge(SOUL, ours, theirs, Kind.SOUL, fake_prose) == MergeResult(theirs, remote_keys=("clinic",))


def test_call_count_on_a_soul_is_an_ordinary_key() -> None:
    base = ed(SOUL, ("clinic:", "call_count: 1\nclinic:"))
    result = merge.merge(
        base,
        base.replace("call_count: 1", "call_count: 2"),
        base.replace("call_count: 1", "call_count: 3"),
        Kind.SOUL,
        fake_prose,
    )
    assert result == MergeResult(base.replace("call_count: 1", "call_count: 3"), remote_keys=("call_count",))


def test_yaml_types_count_as_changes() -> None:
    # `1` and `true` are equal in Python, but a person who wrote `true` changed the property.
    base = ed(BASE, ("language: en", "vip: 1"))
    ours = ed(base, (REX, REX + "- Likes tea\n"))
    theirs = ed(base, ("vip: 1", "vip: true"))
    result = merge.merge(base, ours, theirs, Kind.CALLER, fake_prose)
    assert split_frontmatter(result.text)[0]["vip"] is True


# ---------------------------------------------------------------------------------------------
# Reading git's output


def test_marker_size_is_longer_than_any_run_a_line_starts_with() -> None:
    assert merge.marker_size("a\n", "") == 7
    assert merge.marker_size("a\n========== heading rule\n", "<<<<\n", ">>>>>>>>>>>>\n") == 13
    assert merge.marker_size("||||||||||||||||||||\n") == 21


def test_parse_diff3_reads_passages_and_conflicts() -> None:
    size = 9
    output = (
        "a\n"
        "<<<<<<<<< ours\nO1\nO2\n||||||||| base\nB\n=========\nT\n>>>>>>>>> theirs\n"
        "c\n"
        "<<<<<<<<< ours\nX\n||||||||| base\n=========\n>>>>>>>>> theirs\n"
    )
    assert merge.parse_diff3(output, size) == [
        Clean(("a\n",)),
        Conflict(("B\n",), ("O1\n", "O2\n"), ("T\n",)),
        Clean(("c\n",)),
        Conflict((), ("X\n",), ()),
    ]
    # A line that only looks like a shorter marker is text.
    assert merge.parse_diff3("<<<<<<< not a marker\n=======\n", size) == [
        Clean(("<<<<<<< not a marker\n", "=======\n"))
    ]


def _marker_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("<<<<<<<", "=======", ">>>>>>>", "|||||||"))]


def test_files_that_hold_marker_like_lines_merge_them_as_text(git_prose: merge.ProseMerge) -> None:
    base = BASE + "=======\n"
    ours = ed(base, ("Free text a person wrote.", "<<<<<<< Free text")) + "<<<<<<<<<<<< x\n"
    theirs = ed(base, ("Free text a person wrote.", ">>>>>>> Free text"))
    result = merge.merge(base, ours, theirs, Kind.CALLER, git_prose)
    assert result.prose_kept_twice == 1
    assert result.text == ed(base, ("Free text a person wrote.\n", "<<<<<<< Free text\n>>>>>>> Free text\n")) + (
        "<<<<<<<<<<<< x\n"
    )
    assert _marker_lines(result.text) == ["<<<<<<< Free text", ">>>>>>> Free text", "=======", "<<<<<<<<<<<< x"]


# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# Properties, with git's own merge: random callers, random edits on each side (tests/merge_samples.py)


def _union(base: list[str], ours: list[str], theirs: list[str]) -> set[str]:
    b, o, t = set(base), set(ours), set(theirs)
    return (o & t) | (o - b) | (t - b)


def _sections(text: str) -> dict[str, list[str]]:
    return {
        name: [line for line in lines if line.strip()] for name, lines in sections(split_frontmatter(text)[1]).items()
    }


def _one_side(base: object, ours: object, theirs: object) -> object:
    return ours if ours == theirs or theirs == base else theirs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(versions=three_versions())
def test_property_merges_lose_nothing_added_and_follow_every_rule(
    versions: tuple[Model, Model, Model], git_prose: merge.ProseMerge
) -> None:
    base, ours, theirs = versions
    texts = (base.render(), ours.render(), theirs.render())
    result = merge.merge(*texts, Kind.CALLER, git_prose)
    text = result.text
    event(f"keys the remote won: {len(result.remote_keys)}")
    event(f"prose kept twice: {min(result.prose_kept_twice, 2)}")
    event(f"facts one side deleted: {bool(set(base.facts) - set(ours.facts) or set(base.facts) - set(theirs.facts))}")
    assert result.method is Method.RULES
    assert _marker_lines(text) == []
    caller = parse_caller(text)
    meta, _ = split_frontmatter(text)

    # No line either side added to the body is lost.
    body_lines = set(split_frontmatter(text)[1].splitlines())
    for side in (ours, theirs):
        added = set(split_frontmatter(side.render())[1].splitlines()) - set(split_frontmatter(texts[0])[1].splitlines())
        assert added <= body_lines
    # List sections: a union, a line one side deleted gone, each line once.
    got = _sections(text)
    for name, pick in (("facts", lambda m: m.facts), ("calls", lambda m: m.calls)):
        assert sorted(got[name]) == sorted(_union(pick(base), pick(ours), pick(theirs)))
    # Keys.
    assert caller.call_count == ours.count + theirs.count - base.count
    both = ours.first != base.first and theirs.first != base.first
    assert caller.first_call == str(
        min(ours.first, theirs.first) if both else _one_side(base.first, ours.first, theirs.first)
    )
    both = ours.last != base.last and theirs.last != base.last
    assert caller.last_call == str(
        max(ours.last, theirs.last) if both else _one_side(base.last, ours.last, theirs.last)
    )
    assert set(caller.aliases) == _union(base.aliases, ours.aliases, theirs.aliases)
    remote = []
    for key in ("name", "language"):
        b, o, t = (getattr(m, key) for m in versions)
        assert meta.get(key) == _one_side(b, o, t)  # the side that changed it, or the remote's
        if len({b, o, t}) == 3:
            remote.append(key)
    assert result.remote_keys == tuple(remote)

    # Swapped, the same file up to the order of lines within a section, and but for the keys both
    # sides changed differently: the remote wins those by design, and swapping changes which is remote.
    swapped = merge.merge(texts[0], texts[2], texts[1], Kind.CALLER, git_prose)
    assert (swapped.remote_keys, swapped.prose_kept_twice) == (result.remote_keys, result.prose_kept_twice)
    swapped_meta, _ = split_frontmatter(swapped.text)
    for key in result.remote_keys:
        assert (meta.get(key), swapped_meta.get(key)) == (getattr(theirs, key), getattr(ours, key))
        meta.pop(key, None)
        swapped_meta.pop(key, None)
    meta["aliases"], swapped_meta["aliases"] = sorted(meta["aliases"]), sorted(swapped_meta["aliases"])
    assert meta == swapped_meta
    assert {k: sorted(v) for k, v in _sections(swapped.text).items()} == {k: sorted(v) for k, v in got.items()}
