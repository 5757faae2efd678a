# memory-bridge in a container: the service as a non-root user, the vault on a volume at /vault.
#
#   docker build -t memory-bridge .
#   docker run -d -p 127.0.0.1:8000:8000 -v memory-bridge-vault:/vault --env-file .env \
#     -e HOST=0.0.0.0 -e VAULT_DIR=/vault memory-bridge
#
# It listens on all interfaces (HOST=0.0.0.0; -e wins over a .env's local HOST and VAULT_DIR), which
# the service refuses without WEBHOOK_SECRET: set it (and PHONE_HASH_KEY, ADMIN_API_KEY, ...) in the
# environment, or the container exits at once saying so.
# Give it time to stop (`docker stop -t 60`, compose's stop_grace_period): on SIGTERM it commits every
# pending write and call before it exits.
#
# BASE is any Debian-based image with Python 3.11 (the official slim one by default); git and tini are
# installed from Debian's packages when the base does not have them.
ARG BASE=docker.io/library/python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
# The dependencies first, in a layer of their own: a change to the code does not reinstall them.
COPY pyproject.toml ./
RUN python3 -m venv /opt/memory-bridge \
 && python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))' > /tmp/requirements.txt \
 && /opt/memory-bridge/bin/pip install --no-cache-dir --disable-pip-version-check --quiet -r /tmp/requirements.txt
COPY README.md ./
COPY server ./server
# The project itself, without its test extras; then the installers go: nothing in the image builds.
RUN /opt/memory-bridge/bin/pip install --no-cache-dir --disable-pip-version-check --quiet --no-deps --no-build-isolation . \
 && /opt/memory-bridge/bin/pip uninstall --yes --quiet setuptools pip

FROM ${BASE}
# git keeps the vault's history; tini is PID 1: it passes docker stop's SIGTERM to the service and
# reaps what is orphaned (git's housekeeping detaches), which a Python PID 1 would leave as zombies.
RUN if ! command -v git >/dev/null || ! command -v tini >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends git tini ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 memory-bridge \
 && useradd --system --uid 10001 --gid memory-bridge --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin memory-bridge \
 && install -d -o memory-bridge -g memory-bridge -m 0700 /vault
COPY --from=build /opt/memory-bridge /opt/memory-bridge
ENV PATH=/opt/memory-bridge/bin:$PATH \
    VAULT_DIR=/vault \
    HOST=0.0.0.0 \
    PORT=8000 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Commands read a .env from where they run: not from the vault.
WORKDIR /opt/memory-bridge
USER memory-bridge
VOLUME ["/vault"]
EXPOSE 8000
# Healthy while /health answers; its body says "degraded" (a broken file, a git failure) for a person
# to read: restarting would not fix those.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "memory-bridge"]
CMD ["serve"]
