#!/usr/bin/env bash
# Regenerates both SDKs from the committed spec (openapi/openapi.json) and type-checks them:
#   sdks/python/consent_client      (openapi-python-client, mypy --strict)
#   sdks/typescript/src/client      (@hey-api/openapi-ts, tsc --strict; the scenario is built to dist/)
# The generated code is not committed: it is always this script's output for the spec. Needs
# `pip install -r sdks/python/requirements.txt` and Node 20 (npm ci runs here).
set -euo pipefail
cd "$(dirname "$0")"
spec=../openapi/openapi.json

echo "== python"
rm -rf python/consent_client
openapi-python-client generate --path "$spec" --config python/config.yaml \
  --output-path python/consent_client --meta none --overwrite >/dev/null
(cd python && python3 -m mypy --config-file mypy.ini consent_client scenario.py)

echo "== typescript"
(cd typescript && npm ci --no-audit --no-fund --loglevel=error \
  && rm -rf src/client dist && npx openapi-ts >/dev/null && npx tsc -p .)
