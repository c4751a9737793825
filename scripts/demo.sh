#!/usr/bin/env bash
# `make demo`: the local shape on its embedded defaults. Creates a throwaway Astrid home and
# workspace, installs the default capsules, and asks one question with `astrid -p`: the react
# orchestrator calls the fs tool's search under the sidecar's five layers, every decision lands
# in signed audit chains, and the chains are verified at the end.
# Provider: Anthropic when ANTHROPIC_API_KEY is set, otherwise the replay provider (recorded
# answers, said so below). Set ASTRID_DEMO_KEEP=1 to keep the home and workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
astrid() { "$repo/bin/astrid" "$@"; }

root=$(mktemp -d "${TMPDIR:-/tmp}/astrid-demo-XXXXXX")
export ASTRID_HOME="$root/home"
ws="$root/workspace"
mkdir -p "$ws/.astrid/replay"
printf '# Notes\n\nLaunch: Friday, after the security review.\nOwner: the platform team.\n' > "$ws/notes.md"
cleanup() {
  astrid stop >/dev/null 2>&1 || true
  [ "${ASTRID_DEMO_KEEP:-}" = "1" ] && echo "kept $root" || rm -rf "$root"
}
trap cleanup EXIT

echo "== astrid init"
astrid init
provider=replay
if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
  provider=anthropic
  echo "== provider: anthropic (ANTHROPIC_API_KEY is set)"
else
  cp scripts/demo/transcript.jsonl "$ws/.astrid/replay/transcript.jsonl"
  echo "== provider: replay — no ANTHROPIC_API_KEY, so recorded model answers are played back (no model is called)"
fi
printf '[defaults]\nprovider = "%s"\n' "$provider" > "$ASTRID_HOME/config.toml"

echo "== astrid capsule tree"
astrid capsule tree
echo "== cd workspace && astrid -p \"When is the launch?\" --yes --print-session"
cd "$ws"
astrid -p "When is the launch?" --yes --print-session 2> "$root/stderr"
cat "$root/stderr" >&2
session=$(tail -1 "$root/stderr")
# This session's chains (the daemon may already be preparing the next session beside it).
echo "== astrid audit verify \$ASTRID_HOME/sessions/$session"
astrid audit verify "$ASTRID_HOME/sessions/$session"
