"""The bare remote's `post-receive` hook in the sync benchmark: it plays the git host's push webhook.

git runs it after every push the remote accepts, with `old new ref` lines on stdin, as a git host
runs its webhooks. It notes when each push arrived (wall clock, so the benchmark can split a write's
way to the other replica into "reached the remote" and "reached the replica"), then POSTs a push
event to every URL in its settings file with GitLab's `X-Gitlab-Token` header, as GitLab would.
The settings file (`{"urls": [...], "token": "..."}`) is re-read on every push, so the benchmark
turns push events on and off without touching the hook. Stdlib only: it runs as a plain script.

Installed as `hooks/post-receive`: `exec python githook.py SETTINGS LOG`.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

# A replica that does not answer must not hold the pusher's `git push` for long.
_POST_TIMEOUT_SECONDS = 2.0


def post(url: str, body: bytes, token: str) -> int:
    """POST a push event to `url`; its status, or 0 if it could not be delivered."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=_POST_TIMEOUT_SECONDS)
    try:
        conn.request("POST", parts.path, body, {"X-Gitlab-Token": token, "Content-Type": "application/json"})
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    """Note the push, then deliver its event; never fails the push (a git host's webhooks do not either)."""
    arrived = time.time()
    settings_path, log_path = Path(argv[0]), Path(argv[1])
    updates = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    statuses = []
    for _old, new, ref in updates:
        body = json.dumps({"object_kind": "push", "ref": ref, "after": new}).encode()
        statuses += [post(url, body, settings["token"]) for url in settings["urls"]]
    with open(log_path, "a", encoding="utf-8") as log:
        for _old, new, ref in updates:
            log.write(f"{arrived:.6f} {new} {ref} {','.join(map(str, statuses))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
