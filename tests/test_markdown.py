"""markdown.py: the shape of a vault file shared by parsing and edits: kinds of files, the frontmatter block."""

from __future__ import annotations

import pytest

from server.markdown import Frontmatter, Kind, Unclosed, find_frontmatter, frontmatter_of, is_fence, kind_of


@pytest.mark.parametrize(
    ("relpath", "kind"),
    [
        ("soul.md", Kind.SOUL),
        ("callers/abc.md", Kind.CALLER),
        ("callers/Maria Lopez.md", Kind.CALLER),
        ("callers/family/Maria.md", Kind.CALLER),
        ("notes/2026-11-25.md", Kind.NOTE),
        ("notes/2026-11-25 meeting.md", Kind.OTHER),
        ("notes/sub/2026-11-25.md", Kind.OTHER),
        ("notes/today.md", Kind.OTHER),
        ("callers/abc.txt", Kind.OTHER),
        ("callers/.abc.md.1234.mb.tmp", Kind.OTHER),
        ("callers/.hidden.md", Kind.OTHER),
        (".obsidian/callers/x.md", Kind.OTHER),
        ("callers/.trash/x.md", Kind.OTHER),
        ("README.md", Kind.OTHER),
        ("other/soul.md", Kind.OTHER),
    ],
)
def test_kind_of(relpath: str, kind: Kind) -> None:
    assert kind_of(relpath) is kind


def test_kinds_are_enum_members_not_strings() -> None:
    assert isinstance(kind_of("soul.md"), Kind)
    assert kind_of("soul.md") != "soul"


# Where the frontmatter block is, as Obsidian reads it: lines are split as the edits split them.
@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("", None),
        ("# Maria\n", None),
        ("---\n---\n", Frontmatter(1)),
        ("---\na: 1\n---\nbody\n", Frontmatter(2)),
        ("---\na: 1\n---", Frontmatter(2)),  # no newline after the closing fence
        ("---\r\na: 1\r\n---\r\nbody\r\n", Frontmatter(2)),
        ("---  \na: 1\n---\t\nbody\n", Frontmatter(2)),  # trailing spaces and tabs are allowed
        ("---\na: 1\n---\nabove\n---\nbelow\n", Frontmatter(2)),  # the first `---` closes; later ones are rules
        ("---\na: 1\n", Unclosed()),
        ("---\n", Unclosed()),
        ("---", Unclosed()),
        ("---\na: 1\n...\nbody\n", Unclosed()),  # YAML's `...` does not close it in Obsidian
        ("---\na: 1\n...\n---\nbody\n", Frontmatter(3)),
        ("---\na: 1\n----\nbody\n", Unclosed()),  # four dashes are a rule, not a fence
        ("---\na: 1\n ---\nbody\n", Unclosed()),  # nor is an indented one
        ("----\na: 1\n----\nbody\n", None),  # a block opens only with exactly three dashes
        (" ---\na: 1\n---\n", None),
        ("--- a\nb: 1\n---\n", None),
        ("\n---\na: 1\n---\n", None),  # only on the very first line
        ("# Title\n---\na: 1\n---\n", None),
        ("---\u2028a: 1\u2028---\u2028body", Frontmatter(2)),  # any line ending str.splitlines knows
    ],
)
def test_find_frontmatter(text: str, found: Frontmatter | Unclosed | None) -> None:
    assert find_frontmatter(text.splitlines(keepends=True)) == found
    split = frontmatter_of(text)
    if isinstance(found, Frontmatter):
        lines = text.splitlines(keepends=True)
        assert split == ("".join(lines[1 : found.close]), "".join(lines[found.close + 1 :]))
    else:
        assert split == found


@pytest.mark.parametrize(
    ("line", "fence"),
    [
        ("---", True),
        ("---\n", True),
        ("---\r\n", True),
        ("--- \t\n", True),
        ("----\n", False),
        ("--\n", False),
        ("...\n", False),
        (" ---\n", False),
        ("---x\n", False),
        ("---\n\n", False),  # one line at a time
    ],
)
def test_is_fence(line: str, fence: bool) -> None:
    assert is_fence(line) is fence


@pytest.mark.parametrize("block_lines", [0, 1, 30, 3000])
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_frontmatter_of_finds_a_long_block_before_a_long_body(block_lines: int, ending: str) -> None:
    # frontmatter_of splits the text piece by piece; a fence or a line ending may fall at any cut.
    block = "".join(f"key_{i}: {'v' * (i % 97)}{ending}" for i in range(block_lines))
    body = "".join(f"- line {i}{ending}" for i in range(2000)) + "---" + ending + "tail"
    text = f"---{ending}{block}---{ending}{body}"
    assert frontmatter_of(text) == (block, body)
    assert frontmatter_of(text[: len(f"---{ending}{block}")]) == Unclosed()


def test_frontmatter_of_an_opening_fence_longer_than_a_piece() -> None:
    text = "---" + " " * 5000 + "\na: 1\n---\nbody\n"
    assert frontmatter_of(text) == ("a: 1\n", "body\n")
