#!/usr/bin/env bash
# Build dist/flowfabric, one executable holding the appliance and its three backends.
# Usage: packaging/build.sh [DISTDIR]   (needs `pip install -e '.[build]'` or '.[test]')
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dist="${1:-$root/dist}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python="${PYTHON:-python3}"
"$python" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$dist" --workpath "$work" "$root/packaging/flowfabric.spec"
echo "built $dist/flowfabric ($(du -h "$dist/flowfabric" | cut -f1))"
