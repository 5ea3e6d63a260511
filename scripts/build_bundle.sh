#!/usr/bin/env bash
# Build refactor-mcp.mcpb, the Claude Desktop extension, from manifest.json (validated first).
set -euo pipefail
cd "$(dirname "$0")/.."
MCPB="npx -y @anthropic-ai/mcpb@2.1.2"
$MCPB validate manifest.json
$MCPB pack . "${1:-refactor-mcp.mcpb}"
