"""The Obsidian files a vault ships (SPEC §14): daily-note settings and template, the callers view, ignores.

A new vault gets them when it is created; `memory-bridge upgrade-vault` adds what an existing vault
lacks and says what it changed. A file a person already has is never overwritten.
"""

from __future__ import annotations

import json

import msgspec

from server.vault import Vault

DAILY_NOTES = ".obsidian/daily-notes.json"
TEMPLATE = "templates/daily note.md"
CALLERS_BASE = "callers.base"
GITIGNORE = ".gitignore"
# Obsidian's per-device state: every click would otherwise become a commit.
IGNORED = (".obsidian/workspace*.json", ".obsidian/cache", ".trash/")

# Obsidian's daily notes, where the agent reads them: `notes/YYYY-MM-DD.md`, from a template.
DAILY_NOTES_SETTINGS = {"folder": "notes", "format": "YYYY-MM-DD", "template": TEMPLATE.removesuffix(".md")}
TEMPLATE_TEXT = """\
# {{date:YYYY-MM-DD}}

%% Every caller today hears what you write here. Private reminders go in a comment like this one,
or under the Private heading below: the agent never hears those. %%

## Private
"""
CALLERS_BASE_TEXT = """\
# The callers as a table (Obsidian Bases): open this file in Obsidian.
filters:
  and:
    - file.inFolder("callers")
    - file.ext == "md"
properties:
  note.name:
    displayName: Name
  note.call_count:
    displayName: Calls
  note.last_call:
    displayName: Last call
views:
  - type: table
    name: Callers
    order:
      - file.name
      - note.name
      - note.call_count
      - note.last_call
    sort:
      - property: note.last_call
        direction: DESC
"""


class Upgrade(msgspec.Struct, frozen=True):
    """One thing `add_missing` did, or chose not to do, and why: a line for a person."""

    path: str
    message: str
    changed: bool = True


def shipped() -> dict[str, tuple[str, str]]:
    """The files a vault ships: path -> (text, what it is for)."""
    return {
        DAILY_NOTES: (
            json.dumps(DAILY_NOTES_SETTINGS, indent=2) + "\n",
            f"Obsidian's daily notes go to notes/ as YYYY-MM-DD, from {TEMPLATE}",
        ),
        TEMPLATE: (TEMPLATE_TEXT, "the daily-note template"),
        CALLERS_BASE: (CALLERS_BASE_TEXT, "a table of the callers (name, calls, last call)"),
    }


def add_missing(vault: Vault) -> list[Upgrade]:
    """Write the shipped files a vault lacks and the ignore lines its `.gitignore` lacks; what was done."""
    done: list[Upgrade] = []
    for relpath, (text, purpose) in shipped().items():
        path = vault.root / relpath
        if path.exists():
            if relpath == DAILY_NOTES and (problem := _daily_notes_differ(path.read_text(encoding="utf-8"))):
                done.append(Upgrade(relpath, f"kept {relpath} as it is: {problem}", changed=False))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        vault.write_text(relpath, text)
        done.append(Upgrade(relpath, f"added {relpath}: {purpose}"))
    ignore = vault.root / GITIGNORE
    current = ignore.read_text(encoding="utf-8") if ignore.exists() else ""
    lines = current.splitlines()
    missing = [line for line in IGNORED if line not in lines]
    if missing:
        head = current if not current or current.endswith("\n") else current + "\n"
        added = "# Obsidian's per-device state, never committed\n" + "\n".join(missing) + "\n"
        vault.write_text(GITIGNORE, head + added)
        done.append(Upgrade(GITIGNORE, f"added to {GITIGNORE}: {', '.join(missing)} (a person's own workspace)"))
    return done


def _daily_notes_differ(text: str) -> str | None:
    """What a person's own daily-note settings change that the agent depends on; None if nothing."""
    try:
        settings = json.loads(text)
    except ValueError:
        return "it is not valid JSON; Obsidian's daily notes must go to notes/ as YYYY-MM-DD for the agent to read them"
    if not isinstance(settings, dict):
        return "it is not a JSON object"
    wrong = [
        f"{key} is {settings.get(key)!r}"
        for key in ("folder", "format")
        if (settings.get(key) or "") != DAILY_NOTES_SETTINGS[key]
    ]
    if not wrong:
        return None
    return f"{', '.join(wrong)}; the agent reads daily notes only from notes/ named YYYY-MM-DD"
