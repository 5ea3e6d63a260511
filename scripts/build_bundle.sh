#!/usr/bin/env bash
# Build the Claude Desktop extension into DIR (default dist/) as <name>-<version>.mcpb, the name mcpb reports.
# `mcpb pack` validates manifest.json itself, so there is no separate `mcpb validate`. The bundle ships uv.lock:
# the host's `uv run --frozen` installs exactly the locked versions, the ones the tests ran.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
# The host installs from the lock without resolving again (--frozen): a stale lock would ship a broken bundle.
uv lock --check --quiet
bundle="$out/$(node -p 'const m = require("./manifest.json"); m.name + "-" + m.version + ".mcpb"')"
# mcpb 2.1.2 lists "Icon validation passed. Recommended size is 512×512" under warnings for every valid PNG
# (icon.png is 512x512); with a local icon it is the only icon warning mcpb can give, so it is dropped here.
npx -y @anthropic-ai/mcpb@2.1.2 pack . "$bundle" |
  grep -v -e '^Icon validation warnings:$' -e 'Icon validation passed\. Recommended size' | cat -s
