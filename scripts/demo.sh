#!/usr/bin/env bash
# The README's main command: install, build the embedded default, prune it at 0.5, print a table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python -m scripts.demo "$@"
