#!/usr/bin/env bash
# The whole test run: lint, types, then the suite on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy src
# One test process per core (pytest-xdist): each has its own databases, data directory and ports.
echo "== tests on SQLite (with browser tests) =="
.venv/bin/pytest tests -n auto "$@"
if [ "${SIYU_TEST_SKIP_POSTGRES:-}" = 1 ]; then
  echo "!! PostgreSQL run SKIPPED because SIYU_TEST_SKIP_POSTGRES=1"
  exit 0
fi
bash scripts/services.sh
echo "== tests on PostgreSQL =="
SIYU_TEST_DATABASE_URL=${SIYU_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
  .venv/bin/pytest tests -n auto -m "not browser" "$@"
