"""Tenants end to end (SPEC §12): one server, five tenants, twenty agents, and nothing crossing between them.

The real server under uvicorn serves a TENANTS_DIR of real vaults with real git. Random calls, facts,
notes and post-call events (hypothesis) must never put one tenant's text in another tenant's answer,
file or history; a number calling two tenants has two unrelated keys. Unknown agents, a broken
`tenant.md` and an agent id two tenants claim are refused and reported; tenant.md edits need no restart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.hkdf import tenant_key
from server.phone import caller_key
from tests.conftest import (
    ADMIN_KEY,
    ELEVENLABS_SECRET,
    PHONE_HASH_KEY,
    WEBHOOK_SECRET,
    LiveServer,
    base_env,
    elevenlabs_signature,
    git,
)
from tests.live_helpers import prompt_of, wait_until

TENANTS = [f"t{i}" for i in range(5)]
AGENTS = {name: [f"agent_{name}_{k}" for k in range(4)] for name in TENANTS}  # 20 agents
NUMBERS = {name: f"+1415555030{i}" for i, name in enumerate(TENANTS)}  # each tenant's Twilio number
CALLERS = [f"+4477009002{n:02d}" for n in range(12)]  # the same people call several tenants
MARKER = re.compile(r"mk(t\d)q")


def tenant_md(agents: list[str], numbers: list[str], *extra: str) -> str:
    """A tenant.md as a person writes it (`extra`: more frontmatter lines)."""
    lines = ["---", "agent_ids:", *(f"  - {a}" for a in agents), "numbers:", *(f'  - "{n}"' for n in numbers)]
    lines += [*extra, "---"]
    return "\n".join(lines) + "\n# Tenant\n"


def tenant_of(agent: str) -> str:
    return agent.split("_")[1]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server over TENANTS_DIR: five good tenants, a broken one, two claiming one agent id."""
    folder = tmp_path_factory.mktemp("tenants")
    root = folder / "tenants"
    for name in TENANTS:
        (root / name).mkdir(parents=True)
        (root / name / "tenant.md").write_text(tenant_md(AGENTS[name], [NUMBERS[name]]))
    # t0's support agent has a soul of its own.
    (root / "t0" / "souls").mkdir()
    (root / "t0" / "souls" / "support.md").write_text("---\nagent_ids: [agent_t0_1]\n---\nYou are t0's support desk.\n")
    (root / "broken").mkdir()
    (root / "broken" / "tenant.md").write_text("---\nagent_ids: [agent_broken\n---\n")
    (root / "dupa").mkdir()
    (root / "dupa" / "tenant.md").write_text(tenant_md(["agent_shared", "agent_dupa"], []))
    (root / "dupb").mkdir()
    (root / "dupb" / "tenant.md").write_text(tenant_md(["agent_shared"], []))
    # A tenant syncing with a remote of its own, and one whose remote URL holds a password.
    remote = folder / "synced.git"
    git(folder, "init", "-q", "--bare", "-b", "main", str(remote))
    (root / "synced").mkdir()
    (root / "synced" / "tenant.md").write_text(tenant_md(["agent_synced"], [], f"git_remote: {remote.as_uri()}"))
    (root / "leaky").mkdir()
    (root / "leaky" / "tenant.md").write_text(
        "---\nagent_ids: [agent_leaky]\ngit_remote: https://u:pw@git.example/x.git\n---\n"
    )
    env = base_env(folder / "unused", TENANTS_DIR=str(root), RECONCILE_SECONDS="1")
    server = LiveServer(vault=root, env=env, log_path=folder / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def call(server: LiveServer, agent: str, caller: str, called: str | None = None) -> dict[str, Any]:
    body = {"caller_id": caller, "agent_id": agent, "called_number": called or NUMBERS.get(tenant_of(agent), "")}
    response = server.personalize(body)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def tool(server: LiveServer, agent: str, caller: str, fact: str) -> dict[str, Any]:
    called = NUMBERS.get(tenant_of(agent), "+14155550999")
    body = {"fact": fact, "caller_id": caller, "agent_id": agent, "called_number": called}
    response = server.client.post("/tools/remember", json=body, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"})
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def post_call(
    server: LiveServer,
    agent: str,
    caller: str,
    summary: str,
    agent_number: str = "+14155550199",
    direction: str = "inbound",
) -> httpx.Response:
    event = {
        "type": "post_call_transcription",
        "data": {
            "agent_id": agent,
            "conversation_id": "conv_" + uuid.uuid4().hex[:16],
            "metadata": {
                "start_time_unix_secs": 1764457176,
                "phone_call": {"direction": direction, "external_number": caller, "agent_number": agent_number},
            },
            "analysis": {"transcript_summary": summary},
        },
    }
    body = json.dumps(event).encode()
    headers = {"ElevenLabs-Signature": elevenlabs_signature(body), "Content-Type": "application/json"}
    return server.client.post("/webhook/post-call", content=body, headers=headers)


def admin(server: LiveServer) -> dict[str, Any]:
    return server.client.get("/health", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()  # type: ignore[no-any-return]


def markers_in(text: str) -> set[str]:
    return set(MARKER.findall(text))


def tenant_texts(root: Path, name: str) -> str:
    """Everything a tenant's vault holds: its files outside .git and its whole history, patches included."""
    vault = root / name
    files = "".join(p.read_text(errors="replace") for p in sorted(vault.rglob("*.md")) if ".git" not in p.parts)
    return files + git(vault, "log", "-p", "--all", "--format=%B")


OPERATION = st.tuples(
    st.sampled_from(["call", "tool", "api_fact", "daily_note", "caller_note", "post_call"]),
    st.sampled_from([agent for agents in AGENTS.values() for agent in agents]),
    st.sampled_from(CALLERS),
)


@pytest.mark.slow(seconds=8)
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(OPERATION, min_size=4, max_size=8))
def test_no_tenant_text_reaches_another_tenant(hub: LiveServer, operations: list[tuple[str, str, str]]) -> None:
    answers: list[tuple[str, dict[str, Any]]] = []
    for kind, agent, caller in operations:
        name = tenant_of(agent)
        text = f"note mk{name}q{uuid.uuid4().hex[:8]}"
        if kind == "call":
            answers.append((name, call(hub, agent, caller)))
        elif kind == "tool":
            assert tool(hub, agent, caller, text)["status"] == "saved"
        elif kind == "api_fact":
            assert hub.admin("POST", f"/t/{name}/api/memory/{caller}", json={"fact": text}).status_code == 200
        elif kind == "daily_note":
            assert hub.admin("POST", f"/t/{name}/api/notes", json={"note": text}).status_code == 200
        elif kind == "caller_note":
            known = hub.admin("GET", f"/t/{name}/api/callers/{caller}")
            if known.status_code == 200:
                body = {"note": text, "phone_hash": known.json()["phone_hash"]}
                assert hub.admin("POST", f"/t/{name}/api/notes", json=body).status_code == 200
        else:
            response = post_call(hub, agent, caller, text)
            assert response.status_code == 200 and response.json()["status"] == "held", response.text
        answers.append((name, call(hub, agent, caller)))
    for name, answer in answers:
        assert markers_in(json.dumps(answer)) <= {name}
    idle = ("pending_writes", "pending_calls", "inbox_held")
    assert wait_until(lambda: not any(admin(hub)[figure] for figure in idle), 10)
    for name in TENANTS:
        assert markers_in(tenant_texts(hub.vault, name)) <= {name}


def test_one_number_has_unrelated_keys_and_memories_in_two_tenants(hub: LiveServer) -> None:
    caller = "+447700900399"
    assert tool(hub, "agent_t1_0", caller, "Likes mkt1q the blue room")["status"] == "saved"
    assert tool(hub, "agent_t2_3", caller, "Likes mkt2q the red room")["status"] == "saved"
    one = hub.admin("GET", f"/t/t1/api/callers/{caller}").json()
    two = hub.admin("GET", f"/t/t2/api/callers/{caller}").json()
    assert one["phone_hash"] == caller_key(caller, tenant_key(PHONE_HASH_KEY, "t1").encode())
    assert two["phone_hash"] == caller_key(caller, tenant_key(PHONE_HASH_KEY, "t2").encode())
    assert one["phone_hash"] != two["phone_hash"] != caller_key(caller, PHONE_HASH_KEY.encode())
    assert one["facts"] == ["Likes mkt1q the blue room"] and two["facts"] == ["Likes mkt2q the red room"]
    prompt = prompt_of(call(hub, "agent_t1_2", caller))
    assert "blue room" in prompt and "red room" not in prompt
    # Routed by the called number when the agent id is nobody's.
    assert "red room" in prompt_of(call(hub, "agent_unknown", caller, NUMBERS["t2"]))
    assert caller not in tenant_texts(hub.vault, "t1") + tenant_texts(hub.vault, "t2") + hub.logs()


def recall_of(server: LiveServer, agent: str, caller: str, query: str, called: str | None = None) -> dict[str, Any]:
    body = {"query": query, "caller_id": caller, "agent_id": agent, "called_number": called or "+14155550999"}
    response = server.client.post("/tools/recall", json=body, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"})
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_recall_answers_from_the_tenant_the_agent_belongs_to_only(hub: LiveServer) -> None:
    caller = "+447700900397"
    assert tool(hub, "agent_t1_1", caller, "Parks mkt1q the green van")["status"] == "saved"
    assert tool(hub, "agent_t4_0", caller, "Parks mkt4q the white van")["status"] == "saved"
    assert recall_of(hub, "agent_t1_3", caller, "van") == {
        "status": "found",
        "answer": "Fact: Parks mkt1q the green van",
    }
    assert recall_of(hub, "agent_t4_2", caller, "van") == {
        "status": "found",
        "answer": "Fact: Parks mkt4q the white van",
    }
    # Routed by the called number when the agent id is nobody's; nobody's memory when nothing claims it.
    assert "mkt4q" in recall_of(hub, "agent_unknown", caller, "van", NUMBERS["t4"])["answer"]
    assert recall_of(hub, "agent_nobody", caller, "van") == {"status": "nothing", "answer": ""}


def test_an_agent_with_a_soul_of_its_own_gets_it(hub: LiveServer) -> None:
    assert "t0's support desk" in prompt_of(call(hub, "agent_t0_1", CALLERS[0]))
    assert "t0's support desk" not in prompt_of(call(hub, "agent_t0_0", CALLERS[0]))


def test_an_unknown_agent_gets_the_neutral_answer_and_nothing_is_recorded(hub: LiveServer) -> None:
    caller = "+447700900398"
    assert tool(hub, "agent_t3_0", caller, "Owns mkt3q a boat")["status"] == "saved"
    assert wait_until(lambda: admin(hub)["pending_calls"] == 0 and admin(hub)["pending_writes"] == 0)
    heads = {name: git(hub.vault / name, "rev-parse", "HEAD") for name in TENANTS}
    before = hub.client.get("/health").json()["unclaimed"]
    answer = call(hub, "agent_nobody", caller, "+14155550999")
    assert answer["dynamic_variables"]["caller_known"] is False and "boat" not in json.dumps(answer)
    saved = tool(hub, "agent_nobody", caller, "Owns a plane")
    assert saved["status"] == "not_saved"
    health = hub.client.get("/health").json()
    assert health["unclaimed"] == before + 2
    assert {name: git(hub.vault / name, "rev-parse", "HEAD") for name in TENANTS} == heads
    assert "no tenant claims" in hub.logs()


def test_broken_tenant_md_and_a_shared_agent_id_are_refused_and_reported(hub: LiveServer) -> None:
    report = admin(hub)
    assert "broken" not in report["tenant_health"]
    assert "not valid YAML" in " ".join(report["tenant_problems"]["broken"])
    assert any("agent_shared" in problem for problem in report["tenant_problems"]["dupa"])
    assert any("agent_shared" in problem for problem in report["tenant_problems"]["dupb"])
    assert report["status"] == "degraded"
    assert "holds credentials" in " ".join(report["tenant_problems"]["leaky"])
    assert "pw@" not in json.dumps(report) and "leaky" not in report["tenant_health"]
    assert hub.client.get("/health").json()["tenants_with_problems"] == 4
    # Neither tenant gets the shared agent's calls; dupa keeps the agent that is its alone.
    assert tool(hub, "agent_shared", "+447700900397", "mkdupa")["status"] == "not_saved"
    assert tool(hub, "agent_dupa", "+447700900397", "Visits on Mondays")["status"] == "saved"
    assert hub.admin("GET", "/t/dupb/api/callers/+447700900397").status_code == 404


def test_the_api_names_the_tenant(hub: LiveServer) -> None:
    assert hub.admin("GET", f"/api/callers/{CALLERS[0]}").status_code == 400
    assert hub.admin("GET", f"/t/nobody/api/callers/{CALLERS[0]}").status_code == 404
    assert hub.client.get("/t/t0/api/callers/x").status_code in (401, 403)


def test_tenant_md_added_edited_and_removed_without_a_restart(hub: LiveServer) -> None:
    new = hub.vault / "fresh"
    new.mkdir()
    (new / "tenant.md").write_text(tenant_md(["agent_fresh"], []))
    wait_until(lambda: "fresh" in admin(hub)["tenant_health"], 10, 0.1, "the new tenant")
    assert tool(hub, "agent_fresh", "+447700900396", "Prefers tea")["status"] == "saved"
    (new / "tenant.md").write_text(tenant_md(["agent_fresh2"], []))
    wait_until(lambda: tool(hub, "agent_fresh2", "+447700900396", "Prefers coffee")["status"] == "saved", 10, 0.1)
    assert tool(hub, "agent_fresh", "+447700900396", "Prefers water")["status"] == "not_saved"
    facts = hub.admin("GET", "/t/fresh/api/callers/+447700900396").json()["facts"]
    assert facts[:2] == ["Prefers tea", "Prefers coffee"]
    edits = lambda: git(new, "log", "--format=%B%x1e", "--", "tenant.md").split("\x1e")  # noqa: E731
    wait_until(lambda: len(edits()) == 3 and "Source: hand-edit" in edits()[0], 10, 0.1, "tenant.md's edit committed")
    (hub.vault / "broken" / "tenant.md").write_text(tenant_md(["agent_broken"], []))
    wait_until(lambda: "broken" in admin(hub)["tenant_health"], 10, 0.1, "the mended tenant")
    assert "broken" not in admin(hub)["tenant_problems"]
    (new / "tenant.md").unlink()
    wait_until(lambda: "fresh" not in admin(hub)["tenant_health"], 10, 0.1, "the removed tenant")
    assert tool(hub, "agent_fresh2", "+447700900396", "Prefers juice")["status"] == "not_saved"


def test_a_tenant_with_secrets_of_its_own_is_refused_to_other_tenants(hub: LiveServer) -> None:
    own_webhook, own_elevenlabs = "t4-own-webhook-secret", "t4-own-elevenlabs-secret"
    folder = hub.vault / "t4" / ".git" / "memory-bridge"
    (folder / "webhook-secret").write_text(own_webhook + "\n")
    (folder / "elevenlabs-webhook-secret").write_text(own_elevenlabs + "\n")
    (hub.vault / "t4" / "tenant.md").write_text(tenant_md(AGENTS["t4"], [NUMBERS["t4"]]) + "Own workspace.\n")
    body = {"caller_id": CALLERS[1], "agent_id": "agent_t4_0", "called_number": NUMBERS["t4"]}
    mine = {"Authorization": f"Bearer {own_webhook}"}
    wait_until(lambda: hub.personalize(body, **mine).status_code == 200, 10, 0.1, "the tenant's own secret")
    assert hub.personalize({**body, "agent_id": "agent_t3_0"}, **mine).status_code == 401
    assert hub.personalize(body).status_code == 200  # the service's own secret is good for every tenant

    def signed_post_call(agent: str, secret: str) -> httpx.Response:
        event = {
            "type": "post_call_transcription",
            "data": {
                "agent_id": agent,
                "conversation_id": "conv_" + uuid.uuid4().hex[:16],
                "metadata": {"phone_call": {"external_number": CALLERS[1]}},
                "analysis": {"transcript_summary": "Asked about mkt4q opening hours"},
            },
        }
        raw = json.dumps(event).encode()
        headers = {"ElevenLabs-Signature": elevenlabs_signature(raw, secret), "Content-Type": "application/json"}
        return hub.client.post("/webhook/post-call", content=raw, headers=headers)

    assert signed_post_call("agent_t3_0", own_elevenlabs).status_code == 401
    assert signed_post_call("agent_t4_1", own_elevenlabs).json()["status"] == "held"
    assert signed_post_call("agent_t4_1", ELEVENLABS_SECRET).json()["status"] == "held"
    assert signed_post_call("agent_t4_1", "not-anyones-secret").status_code == 401


def test_a_tenant_syncs_with_the_remote_its_tenant_md_names(hub: LiveServer) -> None:
    remote = hub.vault.parent / "synced.git"
    assert tool(hub, "agent_synced", "+447700900395", "Keeps mksyncedq bees")["status"] == "saved"
    head = git(hub.vault / "synced", "rev-parse", "HEAD").strip()

    def pushed() -> bool:
        try:
            return head in git(remote, "log", "--format=%H", "main")
        except subprocess.CalledProcessError:  # nothing pushed yet: no branch
            return False

    wait_until(pushed, 15, 0.1, "the tenant's push")
    assert admin(hub)["tenant_health"]["synced"]["sync"]["branch"] == "main"
    assert admin(hub)["tenant_health"]["t0"]["sync"] is None  # the others have no remote


def test_the_command_line_names_the_tenant(hub: LiveServer) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **hub.env}
        command = [sys.executable, "-m", "server.cli", "--env-file", os.devnull, *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    hashed = cli("--tenant", "t1", "hash", "+447700900399")
    assert hashed.returncode == 0, hashed.stderr
    assert hashed.stdout.strip() == caller_key("+447700900399", tenant_key(PHONE_HASH_KEY, "t1").encode())
    unnamed = cli("hash", "+447700900399")
    assert unnamed.returncode == 2 and "name one with --tenant" in unnamed.stderr
    assert cli("--tenant", "nobody", "hash", "+447700900399").returncode == 2
    doctor = cli("doctor").stdout
    assert "dupa: agent id agent_shared is also claimed by dupb" in doctor
    assert "leaky: tenant.md `git_remote` holds credentials" in doctor and "pw@" not in doctor
