"""A local stand-in of ElevenLabs' conversations API: its documented paths and response shapes, on loopback.

`GET /v1/convai/conversations` (cursor pages: `conversations`, `has_more`, `next_cursor`; filters
`agent_id`, `call_start_after_unix`, `page_size`) and `GET /v1/convai/conversations/{id}` (the
conversation, shaped like a post-call transcription's `data`), both behind the `xi-api-key` header.
The only mock in the suite: ElevenLabs itself is not on this machine.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

API_KEY = "xi-test-key-0123456789"


class StandIn:
    """Conversations the stand-in serves, newest first, and what it was asked."""

    def __init__(self) -> None:
        self.conversations: list[dict[str, Any]] = []
        self.detail_requests = 0
        self.list_requests = 0
        self.url = ""

    def add(self, data: dict[str, Any]) -> None:
        """A conversation, given as a transcription event's `data`."""
        self.conversations.append(data)
        self.conversations.sort(key=lambda c: -c["metadata"]["start_time_unix_secs"])

    def page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        size = int(query.get("page_size", ["30"])[0])
        start = int(query.get("cursor", ["0"])[0])
        after = int(query.get("call_start_after_unix", ["0"])[0])
        agent = query.get("agent_id", [None])[0]
        chosen = [
            c
            for c in self.conversations
            if c["metadata"]["start_time_unix_secs"] >= after and (agent is None or c["agent_id"] == agent)
        ]
        items = [
            {
                "agent_id": c["agent_id"],
                "agent_name": "Front desk",
                "conversation_id": c["conversation_id"],
                "start_time_unix_secs": c["metadata"]["start_time_unix_secs"],
                "call_duration_secs": 61,
                "message_count": 4,
                "status": c["status"],
                "call_successful": "success",
                "transcript_summary": c["analysis"]["transcript_summary"] if c.get("analysis") else None,
                "direction": "inbound",
            }
            for c in chosen[start : start + size]
        ]
        more = start + size < len(chosen)
        return {"conversations": items, "has_more": more, "next_cursor": str(start + size) if more else None}


@contextmanager
def standin_api() -> Iterator[StandIn]:
    """The stand-in, serving on a loopback port for the length of the block."""
    standin = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.headers.get("xi-api-key") != API_KEY:
                return self._send(401, {"detail": {"status": "invalid_api_key"}})
            url = urlparse(self.path)
            if url.path == "/v1/convai/conversations":
                standin.list_requests += 1
                return self._send(200, standin.page(parse_qs(url.query)))
            prefix = "/v1/convai/conversations/"
            if url.path.startswith(prefix):
                standin.detail_requests += 1
                wanted = url.path[len(prefix) :]
                for c in standin.conversations:
                    if c["conversation_id"] == wanted:
                        return self._send(200, c)
            return self._send(404, {"detail": "not found"})

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
