#!/usr/bin/env bash
# Build a release into DIR (default dist/): the sdist, the wheel, the Claude Desktop bundle and
# SHA256SUMS over the three. Needs uv (the test extra installs it) and Node.js (for mcpb).
# The release workflow (.github/workflows/release.yml) runs this script, so a local build is the released one.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
for tool in uv npx; do
  command -v "$tool" >/dev/null || { echo "build_release.sh needs $tool on PATH (uv: pip install uv; npx: Node.js)" >&2; exit 1; }
done

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' refactor_mcp/_version.py)
manifest_version=$(node -p 'require("./manifest.json").version')
if [ "$version" != "$manifest_version" ]; then
  echo "manifest.json has version $manifest_version, refactor_mcp/_version.py has $version: make them equal" >&2
  exit 1
fi

uv build --out-dir "$out"
scripts/build_bundle.sh "$out"

cd "$out"
artifacts=("refactor_mcp-$version.tar.gz" "refactor_mcp-$version-py3-none-any.whl" "refactor-mcp-$version.mcpb")
if command -v sha256sum >/dev/null; then sha256sum "${artifacts[@]}"; else shasum -a 256 "${artifacts[@]}"; fi >SHA256SUMS
echo
echo "Built in $(pwd) (check with: sha256sum -c SHA256SUMS):"
cat SHA256SUMS
