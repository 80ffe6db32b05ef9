#!/usr/bin/env bash
# Install into ./.venv, check the code (ruff, mypy) and run the whole test suite (the README's
# second command). Any ruff or mypy finding fails the run before a test starts.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
if [ -x scripts/test-prereqs.sh ]; then scripts/test-prereqs.sh; fi
echo "ruff check" >&2
.venv/bin/ruff check --no-cache .
echo "mypy" >&2
.venv/bin/mypy --no-incremental
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
