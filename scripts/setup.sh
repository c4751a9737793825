#!/usr/bin/env bash
# Installs what the project and its tests need on a fresh Debian machine, and skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# npm packages, pinned by package-lock.json; reinstall only when the lockfile changed.
stamp=node_modules/.astrid-lock-sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund
  # esbuild's postinstall fetches nothing; it links the platform binary that npm already installed.
  node node_modules/esbuild/install.js >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
fi

# nats-server for the bus tests (Debian package; the harness starts it on a free loopback port).
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  echo "== apt-get install nats-server"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get install -y --no-install-recommends nats-server \
    || { $sudo_cmd apt-get update && $sudo_cmd apt-get install -y --no-install-recommends nats-server; }
fi

# The command-line programs, bundled into dist/ so they start fast (see scripts/build.mjs).
node scripts/build.mjs
