"""Helpers of the merge tests: a pure stand-in for git's three-way merge, and random callers with edits."""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass

from hypothesis import strategies as st

from server import merge
from server.merge import Clean, Conflict
from tests.vault_samples import H

# ---------------------------------------------------------------------------------------------
# A pure stand-in for git's line-based three-way merge (diff3), for the table: regions between
# lines all three versions share are taken from the side that changed them, or are a conflict.


def _matches(base: list[str], side: list[str]) -> dict[int, int]:
    found = {}
    for block in difflib.SequenceMatcher(None, base, side, autojunk=False).get_matching_blocks():
        for n in range(block.size):
            found[block.a + n] = block.b + n
    return found


def fake_prose(base: str, ours: str, theirs: str) -> list[merge.Chunk]:
    b, o, t = ([line + "\n" for line in text.split("\n")[:-1]] for text in (base, ours, theirs))
    assert all(text == "" or text.endswith("\n") for text in (base, ours, theirs))
    mo, mt = _matches(b, o), _matches(b, t)
    chunks: list[merge.Chunk] = []
    i = j = k = 0

    def region(bi: int, oj: int, tk: int) -> None:
        pb, po, pt = tuple(b[i:bi]), tuple(o[j:oj]), tuple(t[k:tk])
        if po == pt or pt == pb:
            settled = po
        elif po == pb:
            settled = pt
        else:
            chunks.append(Conflict(pb, po, pt))
            return
        if settled:
            chunks.append(Clean(settled))

    while True:
        stable = next((x for x in range(i, len(b)) if mo.get(x, -1) >= j and mt.get(x, -1) >= k), None)
        if stable is None:
            region(len(b), len(o), len(t))
            return chunks
        region(stable, mo[stable], mt[stable])
        chunks.append(Clean((b[stable],)))
        i, j, k = stable + 1, mo[stable] + 1, mt[stable] + 1


FACT_POOL = [f"- fact {c}" for c in "abcdefghij"]
CALL_POOL = [f"- 2026-11-{d:02d} 10:00 · call {d}. (conv_{d})" for d in range(1, 16)]
NOTE_POOL = [f"note line {c}" for c in "pqrstuvwxyz"]
NAMES = ["Maria", "Maria Lopez", "M. Lopez", "Mary"]
DATES = [dt.date(2026, 10, d) for d in (1, 5, 9, 13, 17, 21, 25, 29)]


@dataclass
class Model:
    """A caller file's contents, rendered the same way for all three sides."""

    name: str
    aliases: list[str]
    count: int
    first: dt.date
    last: dt.date
    language: str | None
    facts: list[str]
    calls: list[str]
    notes: list[str]

    def render(self) -> str:
        aliases = "\n" + "".join(f"  - {a}\n" for a in self.aliases) if self.aliases else " []\n"
        head = f'---\nphone_hash: "{H}"\nname: {self.name}\naliases:{aliases}call_count: {self.count}\n'
        head += f"first_call: {self.first}\nlast_call: {self.last}\n"
        head += f"language: {self.language}\n" if self.language else ""
        body = "\n".join(
            ["# Caller", "", "## Facts", *self.facts, "", "## Calls", *self.calls, "", "## Notes", *self.notes]
        )
        return f"{head}---\n{body}\n"


def _list_edit(draw: st.DrawFn, items: list[str], pool: list[str]) -> list[str]:
    out = [item for item in items if not draw(st.booleans())] if items and draw(st.booleans()) else list(items)
    for new in draw(st.lists(st.sampled_from(pool), max_size=3)):
        if new not in out:
            out.insert(draw(st.integers(0, len(out))), new)
    return out


def _prose_edit(draw: st.DrawFn, lines: list[str]) -> list[str]:
    out = list(lines)
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.integers(0, len(out)))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        if op == "insert" or where == len(out):
            out.insert(where, draw(st.sampled_from(NOTE_POOL)))
        elif op == "replace":
            out[where] = draw(st.sampled_from(NOTE_POOL))
        else:
            del out[where]
    return out


@st.composite
def base_caller(draw: st.DrawFn) -> Model:
    return Model(
        name=draw(st.sampled_from(NAMES)),
        aliases=draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3)),
        count=draw(st.integers(0, 5)),
        first=draw(st.sampled_from(DATES)),
        last=draw(st.sampled_from(DATES)),
        language=draw(st.sampled_from([None, "en", "es"])),
        facts=draw(st.lists(st.sampled_from(FACT_POOL), unique=True, max_size=5)),
        calls=draw(st.lists(st.sampled_from(CALL_POOL), unique=True, max_size=5)),
        notes=draw(st.lists(st.sampled_from(NOTE_POOL), max_size=5)),
    )


def edited(draw: st.DrawFn, base: Model) -> Model:
    """One side's edits: facts and calls added and deleted, keys changed, calls counted, notes rewritten."""
    maybe = lambda strategy, same: draw(strategy) if draw(st.booleans()) else same  # noqa: E731
    return Model(
        name=maybe(st.sampled_from(NAMES), base.name),
        aliases=_list_edit(draw, base.aliases, NAMES),
        count=base.count + draw(st.integers(0, 3)),
        first=maybe(st.sampled_from(DATES), base.first),
        last=maybe(st.sampled_from(DATES), base.last),
        language=maybe(st.sampled_from([None, "en", "es", "fr"]), base.language),
        facts=_list_edit(draw, base.facts, FACT_POOL),
        calls=_list_edit(draw, base.calls, CALL_POOL),
        notes=_prose_edit(draw, base.notes) if draw(st.booleans()) else list(base.notes),
    )


@st.composite
def three_versions(draw: st.DrawFn) -> tuple[Model, Model, Model]:
    base = draw(base_caller())
    ours, theirs = edited(draw, base), edited(draw, base)
    if draw(st.booleans()):
        # Both sides change the same things differently (random edits rarely do): a key, a note line.
        key = draw(st.sampled_from(["name", "language"]))
        pool = NAMES if key == "name" else ["en", "es", "fr", "de"]
        values = draw(st.lists(st.sampled_from(pool), min_size=2, max_size=2, unique=True))
        if getattr(base, key) not in values:
            setattr(ours, key, values[0])
            setattr(theirs, key, values[1])
        if base.notes and ours.notes == base.notes and theirs.notes == base.notes:
            at = draw(st.integers(0, len(base.notes) - 1))
            ours.notes[at], theirs.notes[at] = (f"{base.notes[at]} (changed on {side})" for side in ("ours", "theirs"))
    return base, ours, theirs
