#!/usr/bin/env bash
# The whole test run: lint, types, then the suite on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy src
# One test process per core (pytest-xdist): each has its own databases, data directory and ports.
# worksteal: a process that runs out of tests takes some from the other, so neither idles at the end.
xdist=(-n auto --dist worksteal)
# Each test copies the migrated SQLite template into its own folder (~1.6 MB each, kept until the run
# ends): on a RAM disk when there is room, as a disk's syncs cost more than the tests' queries.
shm_free_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')
if [ "${shm_free_kb:-0}" -gt $((8 * 1024 * 1024)) ]; then
  basetemp=$(mktemp -d /dev/shm/siyu-tests.XXXXXX)
  trap 'rm -rf "$basetemp"' EXIT
  xdist+=(--basetemp "$basetemp/run")
fi
echo "== tests on SQLite (with browser tests) =="
.venv/bin/pytest tests "${xdist[@]}" "$@"
if [ "${SIYU_TEST_SKIP_POSTGRES:-}" = 1 ]; then
  echo "!! PostgreSQL run SKIPPED because SIYU_TEST_SKIP_POSTGRES=1"
  exit 0
fi
bash scripts/services.sh
echo "== tests on PostgreSQL =="
SIYU_TEST_DATABASE_URL=${SIYU_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
  .venv/bin/pytest tests "${xdist[@]}" -m "not browser" "$@"
