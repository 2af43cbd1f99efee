#!/usr/bin/env bash
# Runs the Python client's tests (clients/python/tests) against the real server.
#
#   scripts/python_client_tests.sh [pytest arguments...]
#
# - The server: $AIOPSLAB_BIN, default target/release/aiopslab (under $CARGO_TARGET_DIR when set),
#   built by cargo build --release -p aiopslab-cli.
# - PostgreSQL: $DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres; its role must
#   be allowed to create databases and roles (each test session makes scratch ones and drops them).
#   createdb, dropdb and psql must be on PATH.
# - Python: $PYTHON (default python3), 3.9 or newer. The test venv lives under
#   /var/tmp/aiopslab-ci-python (or $AIOPSLAB_PY_VENV_ROOT), one per hash of clients/python/pyproject.toml,
#   made the first time (PyPI must be reachable then) and reused after; the package itself is
#   reinstalled from this checkout on every run, offline.
#
# Exits non-zero when a test fails or when something it needs is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PACKAGE=$ROOT/clients/python

fail() {
    echo "python client tests: $*" >&2
    exit 2
}

BIN=${AIOPSLAB_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/aiopslab}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
[ -x "$BIN" ] || fail "the server program $BIN is missing: build it with \`cargo build --release -p aiopslab-cli\` (or set AIOPSLAB_BIN)"
for tool in createdb dropdb psql; do
    command -v "$tool" >/dev/null || fail "$tool is not on PATH (the PostgreSQL tests make scratch databases with it; apt-get install postgresql-client)"
done

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || fail "$PYTHON not found (set PYTHON to a Python 3.9 or newer)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || fail "$PYTHON is older than Python 3.9"

VENV_ROOT=${AIOPSLAB_PY_VENV_ROOT:-/var/tmp/aiopslab-ci-python}
KEY=$( (sha256sum "$PACKAGE/pyproject.toml"; "$PYTHON" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)
VENV=$VENV_ROOT/$KEY
mkdir -p "$VENV_ROOT"
(
    flock 9
    if [ ! -f "$VENV/.complete" ]; then
        # Made again from scratch when a previous attempt did not finish.
        echo "python client tests: making the test venv $VENV"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check -U pip
        # hatchling too, so that the package can be reinstalled on each run without PyPI.
        "$VENV/bin/pip" install -q --disable-pip-version-check hatchling "$PACKAGE[test]"
        touch "$VENV/.complete"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall "$PACKAGE"
) 9>"$VENV_ROOT/.lock"

export AIOPSLAB_BIN=$BIN PYTHONDONTWRITEBYTECODE=1
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
cd "$PACKAGE"
# -p no:cacheprovider: nothing is written into the checkout.
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q "$@" tests
