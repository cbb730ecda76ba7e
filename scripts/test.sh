#!/usr/bin/env bash
# `make test` (and `make test-long`, which passes --long): the lab is built
# and converged first, alone; then the linters and the tests that need no lab
# run in the background while the lab suites run.  The first converge is CPU
# work on this machine's two cores (Ansible's workers, dpkg in the nodes), and
# so are the linters and the offline tests; the lab suites mostly wait on
# containers, the network and time itself (rate windows, health checks,
# alert delays).  So the CPU work overlaps the waiting, not the converge.
# The offline output is printed once both are done.  Extra arguments go to
# both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

# The suites must leave the checkout as they found it (the lab's state lives
# under .lab/, scratch files in temporary folders): compare git's view.
tree_before=$(git status --porcelain 2>/dev/null)

offline_log=$(mktemp -t automata-offline-tests.XXXXXX)
trap 'rm -f "$offline_log"' EXIT

start=$SECONDS
make --no-print-directory lab
lab_rc=$?
echo "test: lab ready after $((SECONDS - start))s (rc=$lab_rc)"

echo "test: linters and offline tests in the background (their output follows the lab suites)"
# Niced: the lab suites' load balancers answer timed traffic; the offline
# tests only need to be done by the time the lab suites are.
(nice -n 10 make --no-print-directory lint && nice -n 10 "$PY" -m pytest --ignore=tests/lab "$@") >"$offline_log" 2>&1 &
offline_pid=$!

lab_tests_rc=$lab_rc
if ((lab_rc == 0)); then
  echo "::: lab suites"
  "$PY" -m pytest tests/lab "$@"
  lab_tests_rc=$?
else
  echo "test: the lab did not come up: no lab suite"
fi

wait "$offline_pid"
offline_rc=$?
echo "::: linters and offline tests (rc=$offline_rc)"
cat "$offline_log"
tree_rc=0
if [[ "$(git status --porcelain 2>/dev/null)" != "$tree_before" ]]; then
  echo "test: the suites changed the checkout (git status --porcelain, before and after):"
  diff <(echo "$tree_before") <(git status --porcelain) | sed 's/^/  /'
  tree_rc=1
fi
echo "test: done after $((SECONDS - start))s (offline rc=$offline_rc, lab rc=$lab_tests_rc, checkout rc=$tree_rc)"
((offline_rc == 0 && lab_tests_rc == 0 && tree_rc == 0))
