#!/usr/bin/env bash
# `make test` (and `make test-long`, which passes --long): the tests that need
# no lab run while the lab is built and converged, then the lab suites run
# against it.  The offline tests are CPU work; building the lab mostly waits
# on debootstrap, the Debian mirror and the containers, so the two overlap
# well on two cores.  Extra arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

offline_log=$(mktemp -t automata-offline-tests.XXXXXX)
trap 'rm -f "$offline_log"' EXIT

start=$SECONDS
echo "test: offline tests in the background (output below once the lab is up)"
"$PY" -m pytest --ignore=tests/lab "$@" >"$offline_log" 2>&1 &
offline_pid=$!

make --no-print-directory lab
lab_rc=$?
echo "test: lab ready after $((SECONDS - start))s (rc=$lab_rc); waiting for the offline tests"

wait "$offline_pid"
offline_rc=$?
echo "::: offline tests (rc=$offline_rc), finished after $((SECONDS - start))s"
cat "$offline_log"

if ((lab_rc != 0)); then
  echo "test: the lab did not come up (rc=$lab_rc): no lab suite"
  exit "$lab_rc"
fi

echo "::: lab suites"
"$PY" -m pytest tests/lab "$@"
lab_tests_rc=$?
echo "test: done after $((SECONDS - start))s (offline rc=$offline_rc, lab rc=$lab_tests_rc)"
((offline_rc == 0 && lab_tests_rc == 0))
