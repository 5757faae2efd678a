"""The fixtures' call as any caller's: the post-call event and the personalize request, for tests that share a server.

Each test on a shared server delivers the transcription fixture as a call of its own: another
caller's number, a conversation and a call SID of its own, put into the fixture's bytes (the same
lengths, so the rest stays as ElevenLabs sent it).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.conftest import FIXTURES, MARIA, LiveServer, fixture_json
from tests.live_helpers import MARIA_KEY, key_for

RAW = (FIXTURES / "post_call_transcription.json").read_bytes()
CONV = "conv_8901k5zvyjhmfg983brhmhkd98n6"
SUMMARY = "Maria asked the agent to remember a penicillin allergy."
# data.metadata.start_time_unix_secs 1764457163 is 2025-11-29 22:59:23 UTC (TIMEZONE is UTC).
CALL_LINE = f"- 2025-11-29 22:59 · {SUMMARY} ({CONV})"
MARIA_FILE = f"callers/{MARIA_KEY[:12]}.md"
CALL_SID = "CA0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Call:
    """The fixture's call as another caller's: their number, a conversation and a call SID of its own."""

    number: str
    conv: str
    sid: str

    @property
    def key(self) -> str:
        return key_for(self.number)

    @property
    def url(self) -> str:
        """The number as a URL path segment (%2B...)."""
        return quote(self.number, safe="")

    @property
    def file(self) -> str:
        return f"callers/{self.key[:12]}.md"

    @property
    def line(self) -> str:
        return CALL_LINE.replace(CONV, self.conv)

    def raw(self) -> bytes:
        """The transcription fixture's bytes, as ElevenLabs sent them, with this call's number, ids put in."""
        raw = RAW
        for old, new in ((MARIA, self.number), (CONV, self.conv), (CALL_SID, self.sid)):
            assert len(old) == len(new) and old.encode() in raw
            raw = raw.replace(old.encode(), new.encode())
        return raw

    def payload(self, changes: dict[str, object] | None = None) -> dict:
        """`payload(changes)` for this call."""
        data = json.loads(self.raw())
        return payload(changes, data)

    def personalize(self) -> dict:
        """The fixture's personalize request, for this call."""
        return {**fixture_json("personalize_request.json"), "caller_id": self.number, "call_sid": self.sid}


def payload(changes: dict[str, object] | None = None, event: dict | None = None) -> dict:
    """The transcription fixture (or `event`) with `{"path.to.key": value}` changes (value None deletes the key)."""
    data = copy.deepcopy(event or fixture_json("post_call_transcription.json"))
    for dotted, value in (changes or {}).items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return data


def encode(data: dict) -> bytes:
    return json.dumps(data).encode()


def file_of(server: LiveServer, key: str) -> Path:
    """A caller's file as the server knows it now: it takes the caller's name once known (SPEC §14)."""
    return server.vault / server.admin("GET", f"/api/callers/{key}").json()["file"]
