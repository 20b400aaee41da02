#!/usr/bin/env bash
# Run the test suite, setting everything up first on a fresh machine (see launch/setup.sh).
#
#   bash launch/test.sh [pytest arguments...]     e.g. bash launch/test.sh -m "not slow"
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup.sh
# shellcheck disable=SC1091
source launch/env.sh
exec python -m pytest "$@"
