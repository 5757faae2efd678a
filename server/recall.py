"""What the `recall` tool answers (SPEC §16): one caller's lines that best match a query, pure.

Ranking is deliberately simple and fast: the number of the query's words a line shares, then
recency (within facts, calls and notes the later line is the newer; on a tie a note, then a call,
then a fact comes first). It reads
only the caller record it is given, so no other caller's line can ever be in the answer.
"""

from __future__ import annotations

import re

from server.compose import neutralise
from server.newfacts import without_conversation
from server.records import Caller, CallLine

MAX_ANSWER_CHARS = 400
MAX_QUERY_CHARS = 500
MAX_LINE_CHARS = 200
_ELLIPSIS = "…"
_WORD = re.compile(r"\w+")
# Words that match everything and so say nothing about what the agent is looking for.
_STOP = frozenset(
    str.split(
        """a an and are as at be but by did do does for from had has have he her his how i if in is it its me my
    of on or our she so that the their them they this to was we were what when where which who why will with
    you your about any caller call calls called last time ever said say tell told"""
    )
)


def words(value: str) -> set[str]:
    """The words of a text as the ranking compares them: lowercased, a plural's `s` dropped, no stop words."""
    found = set()
    for word in _WORD.findall(value.casefold()):
        if word in _STOP or len(word) < 2:
            continue
        found.add(word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word)
    return found


def _call(call: CallLine) -> str:
    when = " ".join(filter(None, (call.date, call.time)))
    summary = re.sub(r"\s*\((conv_[A-Za-z0-9_\-]+)\)\s*$", "", call.summary)
    return f"Call {when}: {summary}" if when else f"Call: {summary}"


def lines_of(caller: Caller) -> list[str]:
    """Every line of the caller's memory as the tool says it, oldest first within facts, calls and notes."""
    facts = [f"Fact: {without_conversation(fact)}" for fact in caller.facts]
    notes = [f"Note: {note.lstrip('-*+ ')}" for note in caller.notes]
    return [*facts, *(_call(call) for call in caller.calls), *notes]


def _clipped(line: str) -> str:
    flat = neutralise(line)
    return flat if len(flat) <= MAX_LINE_CHARS else flat[: MAX_LINE_CHARS - 1].rstrip() + _ELLIPSIS


def recall(caller: Caller | None, query: str) -> list[str]:
    """The caller's lines that share words with `query`, best first, within MAX_ANSWER_CHARS in all.

    None (a withheld or unknown caller) or a query without a word to look for: nothing.
    """
    if caller is None:
        return []
    wanted = words(query[:MAX_QUERY_CHARS])
    if not wanted:
        return []
    scored: list[tuple[int, int, str]] = []
    for position, line in enumerate(lines_of(caller)):
        common = len(wanted & words(line))
        if common:
            scored.append((common, position, line))
    # More words in common first; among equals the newer (later) line first.
    scored.sort(key=lambda item: (-item[0], -item[1]))
    answer: list[str] = []
    room = MAX_ANSWER_CHARS
    for _, _, line in scored:
        said = _clipped(line)
        cost = len(said) + (1 if answer else 0)
        if cost > room:
            if answer:
                break
            said = said[: room - 1].rstrip() + _ELLIPSIS
            cost = len(said)
        answer.append(said)
        room -= cost
    return answer
