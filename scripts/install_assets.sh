#!/usr/bin/env bash
# Installs the console's front-end packages from the npm registry and copies the
# files the pages load into src/siyu/web/static/vendor (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
vendor=src/siyu/web/static/vendor
stamp="$vendor/.installed-$(sha1sum package.json | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
if [ -f package-lock.json ]; then npm ci --ignore-scripts --no-audit --no-fund --loglevel=error; else npm install --ignore-scripts --no-audit --no-fund --loglevel=error; fi
rm -rf "$vendor"
mkdir -p "$vendor/tabler" "$vendor/htmx" "$vendor/echarts" "$vendor/swagger-ui"
cp node_modules/@tabler/core/dist/css/tabler.min.css "$vendor/tabler/"
cp node_modules/@tabler/core/dist/js/tabler.min.js "$vendor/tabler/"
cp node_modules/htmx.org/dist/htmx.min.js "$vendor/htmx/"
cp node_modules/echarts/dist/echarts.min.js "$vendor/echarts/"
cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css "$vendor/swagger-ui/"
touch "$stamp"
echo "front-end assets installed into $vendor"
