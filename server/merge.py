"""Three-way merge of one vault file by the sync's rules (SPEC §11), pure: three texts in, one out.

git hands its merge driver three versions of a file: the common base, ours (`%A`: the branch being
merged into, the local vault) and theirs (`%B`: the branch being merged, the remote). With no disk,
no git and no clock, this decides:

- frontmatter keys of a caller: `call_count` adds both sides' increments, `first_call` the earliest,
  `last_call` the latest, `aliases` a union; any key of any file: the side that changed it, and
  when both changed it differently the remote's value, reported;
- list lines (a caller's `## Facts` and `## Calls`, a daily note's bullets): a union in order, a
  line either side added kept, a line one side deleted gone, an identical line once;
- everything else is prose, merged three-way by the `ProseMerge` given (git's, `server.mergefile`);
  a passage both sides changed is kept in both versions, one after the other, without conflict
  markers, and reported.

The merged frontmatter is ours' bytes with only the keys the rules change rewritten
(`server.edits`); a file whose frontmatter does not parse on some side is merged as prose throughout.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from server import edits
from server.markdown import HEADING, LIST_ITEM, Kind
from server.parse import VaultFileError, split_frontmatter

# A caller's sections whose lines are list items, merged as sets (headings lowercased, as parsed).
LIST_SECTIONS = frozenset({"facts", "calls"})
# git's conflict markers are 7 characters long unless told otherwise.
DEFAULT_MARKER_SIZE = 7
_MARKER_RUN = re.compile(r"^(<+|\|+|=+|>+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Clean:
    """Lines the three-way merge settled (each ends with a line feed)."""

    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Conflict:
    """A passage both sides changed: its lines in the base, in ours and in theirs."""

    base: tuple[str, ...]
    ours: tuple[str, ...]
    theirs: tuple[str, ...]


Chunk = Clean | Conflict
# A line-based three-way merge: (base, ours, theirs) texts, every line ending with a line feed, to
# the merged passages in order. git's is `server.mergefile.git_prose_merge`.
ProseMerge = Callable[[str, str, str], Sequence[Chunk]]


class Method(enum.Enum):
    """How a file was merged."""

    RULES = "rules"  # frontmatter by key, list lines as sets, the rest as prose
    WHOLE_FILE_AS_PROSE = "whole-file-as-prose"  # some side's frontmatter does not parse


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The merged text, and what conflicted on the way there."""

    text: str
    remote_keys: tuple[str, ...] = ()  # keys both sides changed differently: the remote's value kept
    prose_kept_twice: int = 0  # passages both sides changed, kept in both versions one after the other
    method: Method = Method.RULES

    @property
    def conflicted(self) -> bool:
        """Whether a person should look at the file (`/health` lists it)."""
        return bool(self.remote_keys) or self.prose_kept_twice > 0


class _Missing(enum.Enum):
    MISSING = "missing"  # a key a side does not have


_MISSING = _Missing.MISSING
_Key = tuple[str, str]  # a list line: (its section, its text without trailing spaces)


class _NotRenderable(Exception):
    """A value the surgical edits cannot write back as it was (a nested map, a multi-line string)."""


def merge(base: str, ours: str, theirs: str, kind: Kind, prose: ProseMerge) -> MergeResult:
    """Merge three versions of a vault file of `kind`; never fails on a file's content, never leaves markers."""
    bom = "\ufeff" if ours.startswith("\ufeff") else ""
    texts = [_lf(text.removeprefix("\ufeff")) for text in (base, ours, theirs)]
    try:
        result = _by_rules(texts[0], texts[1], texts[2], kind, prose)
    except (VaultFileError, _NotRenderable):
        out, twice = _resolve(prose(*(_terminated(t) for t in texts)), set())
        result = MergeResult("".join(out), prose_kept_twice=twice, method=Method.WHOLE_FILE_AS_PROSE)
    text = result.text
    if text.endswith("\n") and not texts[1].endswith("\n") and not texts[2].endswith("\n"):
        text = text[:-1]  # neither side ends with a line break: nor does the merge
    if "\r\n" in ours:
        text = text.replace("\n", "\r\n")
    return replace(result, text=bom + text)


def _lf(text: str) -> str:
    # Merged with line feeds only: a CRLF side against an LF one would otherwise differ on every line.
    return text.replace("\r\n", "\n")


def _terminated(text: str) -> str:
    # git adds a missing last line break inside a conflict: add it first, so no line changes length.
    return text if not text or text.endswith("\n") else text + "\n"


def _lines(text: str) -> list[str]:
    """Lines split where git splits them (line feeds only), each ending with one."""
    return [line + "\n" for line in _terminated(text).split("\n")[:-1]]


# -- frontmatter -----------------------------------------------------------------------------------


def _by_rules(base: str, ours: str, theirs: str, kind: Kind, prose: ProseMerge) -> MergeResult:
    metas, bodies = [], []
    for text in (base, ours, theirs):
        meta, body = split_frontmatter(text)  # raises VaultFileError: the whole file is prose then
        metas.append(meta)
        bodies.append(body)
    head, remote = _merge_head(ours[: len(ours) - len(bodies[1])], metas, kind)
    body, twice = _merge_body(bodies, kind, prose)
    return MergeResult(head + body, tuple(remote), twice)


def _merge_head(head: str, metas: list[dict[str, object]], kind: Kind) -> tuple[str, list[str]]:
    """Ours' frontmatter lines with the keys the rules change rewritten; and the keys the remote won."""
    changes: dict[str, object] = {}
    removed: list[str] = []
    remote: list[str] = []
    for key in dict.fromkeys([*metas[1], *metas[2]]):  # ours' keys in order, then theirs' new ones
        got = [meta.get(key, _MISSING) for meta in metas]
        value, conflicted = _decide(key, got[0], got[1], got[2], kind is Kind.CALLER)
        if conflicted:
            remote.append(key)
        if _same(value, got[1]):
            continue
        if value is _MISSING:
            removed.append(key)
        else:
            _check_renderable(value)
            changes[key] = value
    if removed:
        head = edits.remove_properties(head, removed)
    if changes:
        head = edits.set_properties(head, changes)
    return head, remote


def _decide(key: str, base: object, ours: object, theirs: object, caller: bool) -> tuple[object, bool]:
    """A key's merged value (or _MISSING), and whether both sides changed it and the remote won."""
    if caller and key == "call_count" and all(_is_count(v) for v in (base, ours, theirs)):
        # Both sides' increments: when each side counted one call, 3 and 3 from 2 are 4, not 3.
        value = max(0, _count(ours) + _count(theirs) - _count(base))
        return (ours if _same(value, ours) else value), False
    if _same(ours, theirs):
        return ours, False
    if _same(ours, base):
        return theirs, False
    if _same(theirs, base):
        return ours, False
    if caller and key in {"first_call", "last_call"}:
        dates = [v for v in (ours, theirs) if v is not _MISSING]
        pick = min if key == "first_call" else max
        return pick(dates, key=_date_text), False
    if caller and key == "aliases" and all(_is_list(v) for v in (base, ours, theirs)):
        return _union(_as_list(base), _as_list(ours), _as_list(theirs)), False
    return theirs, True


def _same(a: object, b: object) -> bool:
    # By type too: YAML's `1`, `1.0` and `true` are equal in Python but not the same property.
    return type(a) is type(b) and a == b


def _is_count(value: object) -> bool:
    return value is _MISSING or (isinstance(value, int) and not isinstance(value, bool))


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0


def _date_text(value: object) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value).strip()


def _is_list(value: object) -> bool:
    return value is _MISSING or value is None or isinstance(value, list)


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _union(base: list[object], ours: list[object], theirs: list[object]) -> list[object]:
    """Ours' items but those theirs deleted, then theirs' new ones: each once."""
    out: list[object] = []
    for item in [*(i for i in ours if i not in base or i in theirs), *(i for i in theirs if i not in base)]:
        if item not in out:
            out.append(item)
    return out


def _check_renderable(value: object) -> None:
    if value is None:
        return  # an empty property
    for item in value if isinstance(value, list) else [value]:
        one_line = not isinstance(item, str) or item.splitlines() in ([item], [])
        if not (one_line and isinstance(item, str | bool | int | float | dt.date)):
            raise _NotRenderable(type(item).__name__)


# -- body ------------------------------------------------------------------------------------------


def _merge_body(bodies: list[str], kind: Kind, prose: ProseMerge) -> tuple[str, int]:
    """The bodies merged: list lines as sets, through the prose merge so that they keep their places."""
    lines = [_lines(body) for body in bodies]
    keys = [_list_keys(side, kind) for side in lines]
    base, ours, theirs = ({key for key in side if key is not None} for side in keys)
    keep = (ours & theirs) | (ours - base) | (theirs - base)
    # With every list line no longer kept taken out of all three sides, what is left of list lines
    # differs only by additions, which the prose merge places where each side put them.
    kept = [
        [ln for ln, k in zip(side, ks, strict=True) if k is None or k in keep]
        for side, ks in zip(lines, keys, strict=True)
    ]
    out, twice = _resolve(prose(*("".join(side) for side in kept)), {text for _, text in keep})
    allowed: Counter[_Key] = Counter()
    for side in kept[1:]:
        allowed |= Counter(key for key in _list_keys(side, kind) if key is not None)
    return "".join(_once(out, kind, allowed)), twice


def _list_keys(lines: list[str], kind: Kind) -> list[_Key | None]:
    """For each line, its key if it is a list line of a file of `kind`, else None."""
    if kind is Kind.NOTE:
        return [("", ln.rstrip()) if (m := LIST_ITEM.match(ln)) and m.group(1).strip() else None for ln in lines]
    if kind is not Kind.CALLER:
        return [None] * len(lines)
    keys: list[_Key | None] = []
    section: str | None = None
    for line in lines:
        heading = HEADING.match(line.rstrip("\n"))
        if heading and len(heading.group(1)) <= 2:  # sections as `server.parse.sections` finds them
            section = heading.group(2).lower() if len(heading.group(1)) == 2 else None
            keys.append(None)
        elif section in LIST_SECTIONS and line.strip():
            keys.append((section, line.rstrip()))
        else:
            keys.append(None)
    return keys


def _resolve(chunks: Sequence[Chunk], list_texts: set[str]) -> tuple[list[str], int]:
    """The merged lines, both versions of a conflict one after the other; how many changed prose twice."""
    out: list[str] = []
    twice = 0
    for chunk in chunks:
        if isinstance(chunk, Clean):
            out += chunk.lines
            continue
        ours, theirs = chunk.ours, chunk.theirs
        # Lines both sides share at either end of the passage are no conflict (git's "zealous" merge).
        head = 0
        while head < min(len(ours), len(theirs)) and ours[head] == theirs[head]:
            head += 1
        tail = 0
        while tail < min(len(ours), len(theirs)) - head and ours[-1 - tail] == theirs[-1 - tail]:
            tail += 1
        out += [*ours[: len(ours) - tail], *theirs[head : len(theirs) - tail], *ours[len(ours) - tail :]]
        # Both sides adding lines at one place, or list lines, is no conflict: a union is right. Prose
        # of the base that both changed is, and a person should read both versions.
        if ours != theirs and any(_is_prose(line, list_texts) for line in chunk.base):
            twice += 1
    return out, twice


def _is_prose(line: str, list_texts: set[str]) -> bool:
    return bool(line.strip()) and line.rstrip() not in list_texts


def _once(lines: list[str], kind: Kind, allowed: Counter[_Key]) -> list[str]:
    """Drop copies of a list line beyond the most either side has (both sides added it)."""
    seen: Counter[_Key] = Counter()
    out = []
    for line, key in zip(lines, _list_keys(lines, kind), strict=True):
        if key is not None and allowed[key]:
            seen[key] += 1
            if seen[key] > allowed[key]:
                continue
        out.append(line)
    return out


# -- git's merged output ---------------------------------------------------------------------------


def marker_size(*texts: str) -> int:
    """A conflict-marker length no line of `texts` can be mistaken for (longer than any run they start with)."""
    runs = (len(match.group(1)) + 1 for text in texts for match in _MARKER_RUN.finditer(text))
    return max([DEFAULT_MARKER_SIZE, *runs])


def parse_diff3(output: str, size: int) -> list[Chunk]:
    """`git merge-file -p --diff3 --marker-size=size` output as passages; markers `marker_size` chose."""
    start, base_at, middle, end = "<" * size + " ", "|" * size + " ", "=" * size + "\n", ">" * size + " "
    chunks: list[Chunk] = []
    clean: list[str] = []
    parts: tuple[list[str], list[str], list[str]] | None = None
    part = 0  # 0 ours, 1 base, 2 theirs
    for line in _lines(output):
        if parts is None:
            if line.startswith(start):
                if clean:
                    chunks.append(Clean(tuple(clean)))
                clean, parts, part = [], ([], [], []), 0
            else:
                clean.append(line)
        elif part == 0 and line.startswith(base_at):
            part = 1
        elif part < 2 and line == middle:
            part = 2
        elif part == 2 and line.startswith(end):
            chunks.append(Conflict(base=tuple(parts[1]), ours=tuple(parts[0]), theirs=tuple(parts[2])))
            parts = None
        else:
            parts[part].append(line)
    if clean:
        chunks.append(Clean(tuple(clean)))
    return chunks
