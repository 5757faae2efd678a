"""Sample vault file texts shared by the tests of parsing, edits and the vault on disk."""

from __future__ import annotations

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


# Seven levels of nine aliases: 9**7 strings, if a loader ever followed them.
ALIAS_BOMB = """---
phone_hash: "{key}"
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
---
# Bomb
"""
