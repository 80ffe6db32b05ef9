#!/usr/bin/env bash
# Install into ./.venv and run the whole test suite (the README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
if [ -x scripts/test-prereqs.sh ]; then scripts/test-prereqs.sh; fi
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
