"""The sync remote as it may be shown: a URL without its credentials, errors without them either (SPEC §11).

A remote's URL may carry a token (`https://user:token@host/vault.git`). It is kept in the vault's
`.git/config` only; everything that shows it (logs, `/health`, `doctor`, error messages) shows it
through `without_credentials`.
"""

from __future__ import annotations

import re

# The user-information part of any URL in a text: `user:token@` after `scheme://`.
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def without_credentials(text: str) -> str:
    """`text` with the user and password of every URL in it replaced by `***`."""
    return _USERINFO.sub("***@", text)
