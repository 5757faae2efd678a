"""RETAIN_CALLS_DAYS (SPEC §14): call lines older than N days leave the caller files through the write path,
in a `Source: retention` commit; every other byte stays. The pure rule, then the real server's job."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from server.retention import without_old_calls
from tests.conftest import MARIA, running_server
from tests.live_helpers import MARIA_KEY, caller_md, wait_until

OLD = "2020-01-02 09:00 · Asked about opening hours. (conv_old)"


def recent() -> str:
    return f"{dt.datetime.now(dt.UTC).date().isoformat()} 10:00 · Booked a table. (conv_new)"


def test_only_call_lines_before_the_cutoff_go() -> None:
    text = caller_md(MARIA, facts=["- 2019-01-01 is not a call"], calls=[OLD, "2026-11-20 14:02 · Kept. (conv_k)"])
    text += "\n## More\n- 2019-01-01 not under Calls\n"
    kept = without_old_calls(text, "2026-01-01")
    assert kept == text.replace(f"- {OLD}\n", "")
    assert without_old_calls(kept, "2026-01-01") is None  # nothing left to drop: no change
    assert without_old_calls("no frontmatter, no calls\n", "2026-01-01") is None


def test_the_server_drops_old_call_lines_in_a_retention_commit(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    (folder / "vault" / "callers").mkdir(parents=True)
    path = folder / "vault" / "callers" / "Maria Lopez.md"
    path.write_text(caller_md(MARIA, calls=[OLD, recent()]))
    with running_server(folder, RETAIN_CALLS_DAYS="30") as server:
        wait_until(lambda: OLD not in path.read_text(), timeout=10, what="the old call dropped")
        assert path.read_text() == caller_md(MARIA, calls=[recent()])
        message = server.wait_for(lambda: (log := _log(folder / "vault")).startswith("calls before") and log, timeout=5)
        assert message.startswith("calls before ") and f"for Maria Lopez ({MARIA_KEY[:12]})" in message
        assert message.rstrip().endswith("Source: retention")

        def served() -> list[str]:
            calls = server.admin("GET", f"/api/callers/{MARIA_KEY}").json()["calls"]
            return [call["conversation_id"] for call in calls]

        wait_until(lambda: served() == ["conv_new"], what="the index without the old call")


def _log(vault: Path) -> str:
    from tests.conftest import git

    return git(vault, "log", "-1", "--format=%B")
