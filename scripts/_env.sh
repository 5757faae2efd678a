# Sourced by the scripts in this folder: create (or reuse) the project's virtual environment.
# Re-installs only when pyproject.toml changes, so the second run costs a hash and a stat.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# The pip extras to install (e.g. "test"), set by the calling script before sourcing this file.
EXTRAS="${EXTRAS:-}"

find_python() {
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "memory-bridge needs Python 3.11 or newer on PATH" >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "Setting up $VENV (first run only)..." >&2
  "$(find_python)" -m venv "$VENV"
fi

stamp="$VENV/.installed${EXTRAS:+-$EXTRAS}"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}" >&2
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
