#!/usr/bin/env bash
# Installs everything Siyu needs on a fresh Debian machine with Python 3.11:
# the virtualenv with Siyu and its dependencies, and the console's npm packages.
# With --test it also installs what the tests need: Debian's Chromium and CJK fonts.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }
apt_install() {
  echo "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

PYTHON=${PYTHON:-python3}
missing=()
"$PYTHON" -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
command -v npm >/dev/null || missing+=(nodejs npm)
if [ $want_test = 1 ]; then
  command -v chromium >/dev/null || missing+=(chromium)
  fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || missing+=(fonts-noto-cjk)
fi
[ ${#missing[@]} -gt 0 ] && apt_install "${missing[@]}"

if [ ! -x .venv/bin/python ]; then "$PYTHON" -m venv .venv; fi
stamp=".venv/.siyu-installed-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev,postgres]"
  rm -f .venv/.siyu-installed-*
  touch "$stamp"
fi
bash scripts/install_assets.sh
