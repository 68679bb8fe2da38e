# compute-agent: the two commands a newcomer needs are `make demo` and `make test`.
# Both run `make setup` first, which is idempotent and takes seconds when done.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
IMAGES := vm-images/build/busybox-test/manifest.json
PYTEST_ARGS ?=

.PHONY: setup host venv images test lint unit integration e2e demo demo-fleet doctor clean install bench

setup: host venv images

host:
	@scripts/setup-host.sh

# The venv is made from Debian's /usr/bin/python3 with system site packages, because the
# guestfs binding exists only as Debian's python3-guestfs.
venv: $(STAMPS)/venv
$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@

images:
	@/usr/bin/python3 vm-images/build.py
	@/usr/bin/python3 vm-images/build_qga.py
	@/usr/bin/python3 vm-images/build_debian.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

unit: venv
	$(VENV)/bin/pytest -q tests/unit $(PYTEST_ARGS)

integration: setup
	$(VENV)/bin/pytest -q tests/integration $(PYTEST_ARGS)

e2e: setup
	$(VENV)/bin/pytest -q tests/e2e $(PYTEST_ARGS)

# The whole suite: lint, import contracts, then every tier in one pytest run.
test: setup lint
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/python scripts/demo.py

# The fleet on one machine: the broker (setup starts it), a controller and three agents;
# six servers of one project spread 2/2/2, then deleted, nothing left on any host.
demo-fleet: setup
	$(VENV)/bin/python scripts/demo_fleet.py

# Checks the host as `make demo` uses it: the images setup built and the demo's state dir.
doctor: setup
	$(VENV)/bin/compute-agent --image-dir vm-images/build --state-dir /var/tmp/compute-agent-demo/state doctor

# Benchmarks against the floor and the peer tools (bench/README.md); never fails on a slow number.
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(STAMPS) vm-images/build

# Install as a service: unit, tmpfiles/sysusers snippets, config example, binary.
PREFIX ?= /usr/local
install: venv
	install -D -m 0644 systemd/compute-agent.service /etc/systemd/system/compute-agent.service
	install -D -m 0644 systemd/compute-agent-controller.service /etc/systemd/system/compute-agent-controller.service
	install -D -m 0644 etc/controller.toml.example /etc/compute-agent/controller.toml.example
	install -D -m 0644 systemd/compute-agent.tmpfiles /usr/lib/tmpfiles.d/compute-agent.conf
	install -D -m 0644 systemd/compute-agent.sysusers /usr/lib/sysusers.d/compute-agent.conf
	install -D -m 0644 etc/agent.toml.example /etc/compute-agent/agent.toml.example
	test -e /etc/compute-agent/agent.toml || install -m 0640 etc/agent.toml.example /etc/compute-agent/agent.toml
	ln -sf $(CURDIR)/$(VENV)/bin/compute-agent $(PREFIX)/bin/compute-agent
	if [ -d /run/systemd/system ]; then systemd-sysusers; systemd-tmpfiles --create; systemctl daemon-reload; fi
