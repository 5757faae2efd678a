"""`/health` without the admin key tells the status and counts only (SPEC §14).

File names may be people's names or numbers, and error texts quote them: both need the admin key.
"""

from __future__ import annotations

from tests.conftest import ADMIN_KEY, WEBHOOK_SECRET, LiveServer
from tests.live_helpers import wait_until

PUBLIC = {"status", "callers", "files_with_errors", "pending_writes", "pending_calls", "inbox_held", "inbox_parked"}
BROKEN = ("callers/Maria Lopez.md", "callers/4155550123.md")


def test_health_shows_names_and_errors_only_to_the_admin(server: LiveServer) -> None:
    for name in BROKEN:
        (server.vault / name).write_text("---\nname: [unclosed\n---\n# Maria Lopez\n", encoding="utf-8")
    wait_until(
        lambda: server.admin("GET", "/health").json()["files_with_errors"] == len(BROKEN), what="the broken files"
    )

    full = server.admin("GET", "/health").json()
    assert set(full["errors"]) == set(BROKEN)
    assert {"errors", "git_error", "last_commit", "watcher_alive", "worker_alive"} <= set(full)

    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Bearer {WEBHOOK_SECRET}"}):
        response = server.client.get("/health", headers=headers)
        assert response.status_code == 200
        public = response.json()
        assert set(public) == PUBLIC, public
        assert public["status"] == "degraded" and public["files_with_errors"] == 2
        assert public["callers"] == full["callers"] and public["pending_writes"] >= 0
        for secret_text in ("Maria", "Lopez", "4155550123", "callers/", "unclosed"):
            assert secret_text not in response.text, (headers, response.text)
    assert ADMIN_KEY not in server.logs()
