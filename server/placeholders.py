"""The `{{placeholders}}` a soul or a greeting uses, which of them no variable fills, and defusing those: pure.

ElevenLabs fails a call whose prompt or first message holds a `{{name}}` that no dynamic variable
fills ("Missing required dynamic variables"). The answer always sends the soul's variables and the
built-ins, and ElevenLabs fills its own `system__` ones; any other placeholder is reported at load
(`/health`, `doctor`) and sent with its braces broken apart, as text, never as a placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import msgspec

from server.records import Soul

# ElevenLabs' placeholder: a variable name between double braces, spaces allowed inside.
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_\-]+)\s*\}\}")
SYSTEM_PREFIX = "system__"


class Unfilled(msgspec.Struct, frozen=True):
    """A placeholder no variable fills, and where it is (`body`, `first_message`, `first_message_returning`)."""

    name: str
    where: str


def is_filled(name: str, known: Collection[str]) -> bool:
    """Whether the answer (or ElevenLabs itself, for `system__` names) gives this placeholder a value."""
    return name in known or name.startswith(SYSTEM_PREFIX)


def unfilled_in(soul: Soul, builtins: Collection[str]) -> list[Unfilled]:
    """Every placeholder of the soul's body and greetings that no variable fills, in order, once each."""
    known = {*soul.variables, *builtins}
    found: list[Unfilled] = []
    for where, text in (
        ("body", soul.body),
        ("first_message", soul.first_message),
        ("first_message_returning", soul.first_message_returning),
    ):
        for match in _PLACEHOLDER.finditer(text):
            item = Unfilled(match.group(1), where)
            if not is_filled(item.name, known) and item not in found:
                found.append(item)
    return found


def defuse(text: str, known: Collection[str]) -> str:
    """`text` with every placeholder no variable fills turned into plain text (`{ {name} }`)."""
    if "{{" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        return match.group(0) if is_filled(match.group(1), known) else "{ {" + match.group(1) + "} }"

    return _PLACEHOLDER.sub(replace, text)
