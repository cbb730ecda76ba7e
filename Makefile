# The two commands a fresh machine needs are `make lab` and `make test`
# (README.md).  Everything else is here for day-to-day work.
PY := .venv/bin/python

.PHONY: bootstrap lab up converge lint test test-long test-offline verify down bench bench-balancer load-test soak render

bootstrap:
	@scripts/bootstrap.sh

## The main job on the local lab: build it, then converge playbooks/edge.yml.
lab: bootstrap up converge

up: bootstrap
	$(PY) -m lab up

converge:
	$(PY) -m lab converge

## Python, YAML and Ansible linters (docs/decisions.md D7); ~30 s.
## ansible-lint runs the Ansible it finds next to the interpreter.
lint: bootstrap
	$(PY) -m ruff check .
	$(PY) -m yamllint --strict .
	PATH="$(dir $(PY)):$$PATH" $(PY) -m ansiblelint

## The whole test suite: the lab is built and converged, then the lab suites
## run beside the linters and the tests that need no lab (scripts/test.sh).
## Long scenarios run in a short form here; `make test-long` runs their full form.
test:
	@scripts/test.sh

test-long:
	@scripts/test.sh --long

## Only the tests that need no lab (linters, backend, Pulumi program, roles, benchmark smoke).
test-offline: lint
	$(PY) -m pytest --ignore=tests/lab

verify:
	$(PY) -m lab verify

down:
	$(PY) -m lab down

bench: bootstrap
	$(PY) -m bench
	$(PY) -m bench.changes

## The Locust scenarios against the lab (docs/load-tests.md), e.g.
##   make load-test ARGS="--scenario mixed --target haproxy --users 200 --run-time 2m"
load-test: bootstrap
	$(PY) -m load_tests $(ARGS)

## The chaos soak on the lab (docs/soak.md), e.g. `make soak DURATION=1h ARGS="--seed 7"`.
DURATION ?= 1h
soak: bootstrap
	$(PY) -m soak --duration $(DURATION) $(ARGS)

## Client-side balancing strategies with one slow AI instance (docs/client-load-balancing.md).
bench-balancer: bootstrap
	$(PY) -m bench.balancer
