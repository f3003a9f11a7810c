# One virtualenv per service (as its container has) plus one for the gateway and tooling:
# TensorFlow and torchvision must never share a process.
PYTHON    ?= python3
VENVS     := .venvs
SERVICES  := keras torch tf jax
MNIST_DIR ?= $(abspath ../shared/data/mnist)
export MNIST_DIR

PIP_QUIET := --quiet --disable-pip-version-check
SUDO      := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: help install browser test lint unit-test service-tests contract-tests compose-smoke swarm-smoke run clean

help:
	@echo "make run    start the gateway and every service as local processes"
	@echo "make test   install everything needed and run the whole test suite"

# A venv is rebuilt when one of its requirement files changes.
$(VENVS)/%/.installed: services/%/requirements.txt servekit/requirements.txt servekit/pyproject.toml requirements-test.txt
	$(PYTHON) -m venv $(VENVS)/$*
	$(VENVS)/$*/bin/pip install $(PIP_QUIET) -r services/$*/requirements.txt -r requirements-test.txt
	$(VENVS)/$*/bin/pip install $(PIP_QUIET) --no-deps -e servekit
	touch $@

$(VENVS)/dev/.installed: requirements-dev.txt requirements-test.txt gateway/requirements.txt servekit/requirements.txt servekit/pyproject.toml
	$(PYTHON) -m venv $(VENVS)/dev
	$(VENVS)/dev/bin/pip install $(PIP_QUIET) -r requirements-dev.txt
	$(VENVS)/dev/bin/pip install $(PIP_QUIET) --no-deps -e servekit
	touch $@

install: $(VENVS)/dev/.installed $(foreach s,$(SERVICES),$(VENVS)/$(s)/.installed)

# The web page is tested in Debian's Chromium (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null || { \
		echo "installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: $(VENVS)/dev/.installed
	$(VENVS)/dev/bin/ruff check .

unit-test: $(VENVS)/dev/.installed
	$(VENVS)/dev/bin/pytest servekit/tests

# Each service's own tests run in its own venv and its own pytest process.
service-tests: $(foreach s,$(SERVICES),$(VENVS)/$(s)/.installed)
	@set -e; for s in $(SERVICES); do \
		echo "== services/$$s"; \
		(cd services/$$s && ../../$(VENVS)/$$s/bin/python -m pytest tests); \
	done

# Contract tests talk HTTP only: they start every service under gunicorn with its own venv.
contract-tests: install browser
	$(VENVS)/dev/bin/pytest tests --durations=25

# The containers, for real, when a Docker engine with the compose plugin is here or can be installed
# (as root, on these machines: the setup script also starts dockerd preferring local images for Swarm).
DOCKER_SETUP := ../shared/docker/setup-engine.sh
define with_docker
	@if docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then \
		$(1); \
	elif [ "$$(id -u)" = 0 ] && [ -f $(DOCKER_SETUP) ]; then \
		bash $(DOCKER_SETUP) && $(1); \
	else \
		echo "$(2) skipped: no Docker engine here and none can be installed"; \
	fi
endef

compose-smoke: $(VENVS)/dev/.installed
	$(call with_docker,$(VENVS)/dev/bin/python scripts/compose_smoke.py,compose smoke test)

# The Swarm stack (deploy/swarm): a single-node swarm is created for the test and left afterwards.
swarm-smoke: $(VENVS)/dev/.installed
	$(call with_docker,$(VENVS)/dev/bin/python scripts/swarm_smoke.py,swarm smoke test)

test: lint unit-test service-tests contract-tests compose-smoke swarm-smoke

run: install
	scripts/run-local

clean:
	rm -rf $(VENVS)
