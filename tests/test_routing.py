"""Routing (SPEC §12), pure: tenant.md claims, a request's tenant, shared claims refused, souls; own numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import Settings
from server.identity import Identities
from server.index import Index
from server.ownnumbers import OwnNumbers
from server.phone import caller_key
from server.routing import By, Directory, Route, TenantClaims, TenantFileError, parse_tenant, soul_for, valid_name

KEY = b"routing-test-key"


def test_tenant_md_claims_are_read_and_numbers_normalised() -> None:
    text = '---\nagent_ids:\n  - agent_a\n  - agent_a\nnumbers: ["+1 415 555 0101", "020 7183 8750"]\n---\nbody\n'
    claims = parse_tenant(text, "GB")
    assert claims == TenantClaims(("agent_a",), ("+14155550101", "+442071838750"))
    assert parse_tenant("no frontmatter at all\n", None) == TenantClaims()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("---\nagent_ids: [a\n---\n", "not valid YAML"),
        ("---\nagent_ids: {a: 1}\n---\n", "must be a list"),
        ("---\nagent_ids: ['has space']\n---\n", "not an agent id"),
        ("---\nnumbers: ['+14155550101', 'call me']\n---\n", "entry 2 is not a phone number"),
        ("---\nagent_ids: [a]\n", "no closing"),
        ("<<<<<<< ours\n---\nagent_ids: [a]\n---\n=======\n---\n>>>>>>> theirs\n", "conflict markers"),
        ("---\ngit_remote: https://me:secret@git.example/v.git\n---\n", "holds credentials"),
        ("---\ngit_branch: 'no spaces please'\n---\n", "not a branch name"),
    ],
)
def test_a_broken_tenant_md_is_refused_with_a_reason(text: str, problem: str) -> None:
    with pytest.raises(TenantFileError, match=problem) as info:
        parse_tenant(text, None)
    assert "secret" not in str(info.value) and "call me" not in str(info.value)


def test_routing_by_agent_then_called_number_and_shared_claims_go_to_nobody() -> None:
    directory = Directory(
        {
            "acme": TenantClaims(("agent_a", "agent_shared"), ("+14155550101",)),
            "bolt": TenantClaims(("agent_b", "agent_shared"), ("+14155550102", "+14155550199")),
            "cove": TenantClaims((), ("+14155550199",)),
        },
        "US",
    )
    assert directory.route("agent_a", "+14155550102") == Route("acme", By.AGENT)
    assert directory.route("agent_unknown", "(415) 555-0102") == Route("bolt", By.NUMBER)
    assert directory.route(None, "+14155550101") == Route("acme", By.NUMBER)
    assert directory.route("agent_shared", None) == Route(None, By.UNCLAIMED)
    assert directory.route("agent_x", "+14155550199") == Route(None, By.UNCLAIMED)
    assert directory.route(12, ["junk"]) == Route(None, By.UNCLAIMED)
    assert directory.conflicts == {
        "acme": ["agent id agent_shared is also claimed by bolt"],
        "bolt": ["agent id agent_shared is also claimed by acme", "one of its numbers is also claimed by cove"],
        "cove": ["one of its numbers is also claimed by bolt"],
    }


def test_an_agent_picks_its_soul_the_first_by_path_when_two_list_it() -> None:
    souls = {"souls/sales.md": ("agent_s", "agent_both"), "souls/about.md": ("agent_both",)}
    assert soul_for("agent_s", souls) == "souls/sales.md"
    assert soul_for("agent_both", souls) == "souls/about.md"
    assert soul_for("agent_other", souls) is None and soul_for(None, souls) is None


@pytest.mark.parametrize(
    ("name", "ok"),
    [("acme", True), ("acme-dental_2", True), ("Acme", False), (".git", False), ("a b", False), ("", False)],
)
def test_tenant_names(name: str, ok: bool) -> None:
    assert valid_name(name) is ok


def identities(configured: tuple[str, ...], git_dir: Path | None = None) -> Identities:
    settings = Settings(agent_numbers=configured)
    return Identities(settings, Index(), KEY, OwnNumbers(configured, git_dir))


def test_a_configured_number_calling_out_gives_the_callee() -> None:
    who = identities(("+14155550199",)).identify("+14155550199", "+447700900123")
    assert who.outbound and who.key == caller_key("+447700900123", KEY)
    ours = identities(("+14155550199", "+14155550100")).identify("+14155550199", "+14155550100")
    assert ours.outbound and ours.key is None  # our number calling our number: nobody's memory


def test_a_learned_number_is_never_a_caller_and_is_kept_as_a_key_only(tmp_path: Path) -> None:
    ids = identities((), tmp_path)
    inbound = ids.identify("+447700900123", "+14155550177")
    assert inbound.key == caller_key("+447700900123", KEY) and not inbound.outbound
    ids.after_answer(inbound, "+14155550177")
    stored = (tmp_path / "memory-bridge" / "own-numbers").read_text()
    assert stored == caller_key("+14155550177", KEY) + "\n" and "555" not in stored
    # With nothing configured, a call from a learned number of ours is nobody's: the neutral answer.
    outbound = ids.identify("+14155550177", "+447700900123")
    assert outbound.outbound and outbound.key is None
    # Configured numbers make the same call the callee's; a restart reads the learned keys back.
    again = Identities(Settings(agent_numbers=("+14155550100",)), Index(), KEY, OwnNumbers(("+14155550100",), tmp_path))
    assert again.identify("+14155550177", "+447700900123").key == caller_key("+447700900123", KEY)
    # A finished call that names the number as the other party un-learns it.
    again.unlearn_own("+14155550177")
    assert again.identify("+14155550177", "+447700900123").key == caller_key("+14155550177", KEY)
    assert (tmp_path / "memory-bridge" / "own-numbers").read_text() == ""


def test_learning_stops_at_a_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("server.ownnumbers.MAX_LEARNED", 3)
    own = OwnNumbers((), tmp_path)
    assert [own.learn(f"{n:064x}") for n in range(5)] == [True, True, True, False, False]
    assert len(OwnNumbers((), tmp_path).learned) == 3
