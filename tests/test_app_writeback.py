"""Post-call write-back end to end (SPEC §6): idempotent by the recorded conversation id only, and a
forgotten caller stays forgotten for the deliveries of conversations that happened before the forget."""

from __future__ import annotations

import time

from tests.calls import CALL_LINE, CONV, RAW, encode, file_of, payload
from tests.conftest import MARIA, LiveServer, commits_since, git, vault_head, vault_snapshot
from tests.live_helpers import MARIA_KEY, request
from tests.test_app_postcall import applied, deliver, wait_for_commits

FORGETS = ".git/memory-bridge/forgotten"


def test_a_conversation_id_in_a_fact_note_or_summary_never_blocks_the_real_call(server: LiveServer) -> None:
    assert server.admin("POST", f"/api/memory/{MARIA}", json={"fact": f"Quoted ({CONV}) to us"}).status_code == 200
    note = {"note": f"See ({CONV})", "phone_hash": MARIA_KEY, "date": "2026-01-02"}
    assert server.admin("POST", "/api/notes", json=note).status_code == 200
    # An earlier call whose summary ends with the id, written by the service before its own id.
    earlier = payload({"data.conversation_id": "conv_earlier", "data.metadata.start_time_unix_secs": 1764370763})
    earlier["data"]["analysis"]["transcript_summary"] = f"Asked about ({CONV})"
    assert deliver(server, encode(earlier)).json()["status"] == "held"
    applied(server)

    response = deliver(server, RAW)

    assert response.status_code == 200 and response.json()["status"] == "held"
    applied(server)
    lines = file_of(server, MARIA_KEY).read_text(encoding="utf-8").splitlines()
    assert lines.count(CALL_LINE) == 1
    assert f"- 2025-11-28 22:59 · Asked about ({CONV}) (conv_earlier)" in lines
    # The exact id at the end of a call line is still a recorded call: a retry changes nothing.
    files, head = vault_snapshot(server.vault), vault_head(server.vault)
    assert deliver(server, RAW).json()["status"] == "duplicate"
    assert deliver(server, encode(earlier)).json()["status"] == "duplicate"
    assert vault_snapshot(server.vault) == files and vault_head(server.vault) == head


def test_a_replayed_post_call_never_brings_a_forgotten_caller_back_even_after_a_restart(server: LiveServer) -> None:
    assert deliver(server, RAW).json()["status"] == "held"
    applied(server)
    other = payload({"data.conversation_id": "conv_same_day"})  # another call from before the forget
    forgot = server.admin("DELETE", f"/api/callers/{MARIA}")
    assert forgot.status_code == 200
    forgotten_by = time.time()
    files, head = vault_snapshot(server.vault), vault_head(server.vault)

    for body in (RAW, encode(other)):
        response = deliver(server, body)
        assert response.status_code == 200
        assert response.json() == {"status": "forgotten", "caller": MARIA_KEY[:12]}
    server.stop()
    server.start()
    response = deliver(server, RAW)
    assert response.json() == {"status": "forgotten", "caller": MARIA_KEY[:12]}
    assert server.admin("GET", f"/api/callers/{MARIA_KEY}").status_code == 404
    assert vault_snapshot(server.vault) == files and vault_head(server.vault) == head

    # The record of forgets is local: never in the vault's files or history, and it holds no number.
    record = (server.vault / FORGETS).read_text(encoding="ascii")
    assert record.split()[0] == MARIA_KEY and MARIA not in record and MARIA[1:] not in record
    assert "forgotten" not in git(server.vault, "log", "--all", "--name-only", "--format=")
    assert MARIA_KEY[:12] not in git(server.vault, "ls-files")

    # A new call from the same number afterwards: the caller is created again as usual.
    start = vault_head(server.vault)
    assert server.personalize(request(MARIA)).json()["dynamic_variables"]["caller_known"] is False
    wait_for_commits(server, start, 1)
    # Start times are whole seconds, and a call that began in the second of the forget counts as
    # before it: this call begins in a later second, however quickly the steps above ran.
    time.sleep(max(0.0, int(forgotten_by) + 1 - time.time()))
    later = payload({"data.conversation_id": "conv_after", "data.metadata.start_time_unix_secs": int(time.time())})
    response = deliver(server, encode(later))
    assert response.json() == {"status": "held", "caller": MARIA_KEY[:12]}
    applied(server)
    text = file_of(server, MARIA_KEY).read_text(encoding="utf-8")
    assert "(conv_after)" in text and CONV not in text
    assert f"\n- call summary for {MARIA_KEY[:12]} (conv_after)\n" in commits_since(server.vault, start)[-1]
