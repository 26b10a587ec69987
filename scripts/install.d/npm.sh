#!/usr/bin/env bash
# Node test dependencies pinned by package-lock.json: Azurite, the Azure Blob emulator that the
# storage tests start (tests/storage/servers/azurite.py). Does nothing when node_modules was
# already installed from this exact lock file.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is not installed: install Node.js 20 and npm (apt-get install -y nodejs npm)" >&2
  exit 1
fi
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp=node_modules/.satchel-lock.sha256
if [ -x node_modules/.bin/azurite-blob ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error >/dev/null
echo "$want" >"$stamp"
