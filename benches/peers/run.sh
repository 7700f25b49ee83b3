#!/usr/bin/env bash
# Peer benchmark: Cohort vs numpy vs Flower (see README.md). Not run by CI.
# Makes the virtualenv on first use (outside the repo), then runs compare.py.
#   COHORT_BIN=target/release/cohort benches/peers/run.sh [--rounds 20] [--workdir DIR]
set -euo pipefail
VENV=${PEERS_VENV:-/tmp/peers-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "flwr[simulation]" numpy psutil
fi
exec "$VENV/bin/python" "$(dirname "$0")/compare.py" "$@"
