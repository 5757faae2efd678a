"""ElevenLabs' conversations API, read with the standard library: the list (cursor pages) and one conversation.

`GET /v1/convai/conversations` pages through conversations (`cursor`, `page_size`, `agent_id`,
`call_start_after_unix`), answering `{conversations, has_more, next_cursor}`; `GET
/v1/convai/conversations/{id}` answers one conversation in the shape of a post-call transcription's
`data` (`analysis.transcript_summary`, `metadata.phone_call`, data collection). Authenticated with the
`xi-api-key` header. Busy (429) and failing (5xx) answers are retried with backoff; the key never
appears in an error.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import msgspec

from server.elevenlabs import PostCallData

PAGE_SIZE = 100
_ATTEMPTS = 5
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class ApiError(Exception):
    """The API could not be read; the message is safe to show (no key)."""


class ConversationItem(msgspec.Struct, kw_only=True):
    """One conversation in the list: enough to decide whether its details are needed."""

    conversation_id: str
    agent_id: str | None = None
    start_time_unix_secs: int | float | None = None
    status: str | None = None


class ConversationPage(msgspec.Struct, kw_only=True):
    """One page of the list."""

    conversations: list[ConversationItem] | None = None
    has_more: bool | None = False
    next_cursor: str | None = None


class ConversationsApi:
    """A client for one API base URL and key."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0, pause: float = 1.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.pause = pause  # the first retry's wait; doubled each time

    def pages(self, since: float | None = None, agent_id: str | None = None) -> Iterator[ConversationPage]:
        """Every page of the list, newest conversations first, following `next_cursor`."""
        cursor: str | None = None
        while True:
            query: dict[str, str] = {"page_size": str(PAGE_SIZE)}
            if cursor:
                query["cursor"] = cursor
            if agent_id:
                query["agent_id"] = agent_id
            if since is not None:
                query["call_start_after_unix"] = str(int(since))
            page = msgspec.convert(self._get("/v1/convai/conversations", query), ConversationPage, strict=False)
            yield page
            if not page.has_more or not page.next_cursor or page.next_cursor == cursor:
                return
            cursor = page.next_cursor

    def details(self, conversation_id: str) -> PostCallData:
        """One conversation, in the shape of a transcription event's `data`."""
        path = "/v1/convai/conversations/" + urllib.parse.quote(conversation_id, safe="")
        try:
            return msgspec.convert(self._get(path, {}), PostCallData, strict=False)
        except msgspec.ValidationError as exc:
            raise ApiError(f"conversation {conversation_id}: unexpected shape ({exc})") from None

    def _get(self, path: str, query: dict[str, str]) -> object:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, headers={"xi-api-key": self.api_key, "accept": "application/json"})
        wait = self.pause
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                if exc.code not in _RETRY_STATUSES or attempt == _ATTEMPTS:
                    raise ApiError(f"ElevenLabs answered {exc.code} to GET {path}") from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                if attempt == _ATTEMPTS:
                    raise ApiError(f"cannot reach {self.base_url}: {getattr(exc, 'reason', exc)}") from None
            except ValueError:
                raise ApiError(f"GET {path} did not answer JSON") from None
            time.sleep(wait)
            wait *= 2
        raise ApiError(f"GET {path} failed")  # not reached: the last attempt raises
