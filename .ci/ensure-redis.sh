#!/usr/bin/env bash
# The tests start their own redis-server on a free port; this only makes sure the binary exists.
set -euo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
echo "redis-server not found; installing it" >&2
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
elif command -v brew >/dev/null 2>&1; then
  brew install redis
else
  echo "Please install redis-server (Debian/Ubuntu: apt-get install redis-server)" >&2; exit 1
fi
