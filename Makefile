# Kassabro: two commands on a fresh Debian / Raspberry Pi OS machine.
#   make run    the demo: agent + simulated Hogia API, Sharespine and till on loopback
#   make test   installs what the tests need and runs the whole suite
# Plus: make check (ruff format, ruff lint, mypy --strict), make test-fast (all but the
#       slow tests, under a minute), make bench (benchmarks, prints tables), make soak
#       (long crash soak), make dist (offline install bundles in dist/), make lock
#       (re-pin requirements.lock), make test-py313 (the fast suite under CPython 3.13,
#       Raspberry Pi OS trixie's Python, in .venv313).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_TEST_PACKAGES := mosquitto chromium chromium-driver shellcheck sqlite3 openssl systemd util-linux libsystemd-dev pkg-config gcc python3-dev strace nats-server postgresql ansible-core samba smbclient curl
PYTEST_ARGS ?=

.PHONY: run check test test-fast test-py313 bench soak venv deps-system deps-test clean lock dist

# python3-venv is a separate Debian package; bring it only when venv cannot be made.
$(VENV)/.created:
	@if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
		echo "installing python3-venv"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

# The runtime dependencies come from requirements.lock, hashes checked: the
# versions the bundles ship are the versions run and tested here. Extras and
# test tools go on top; they do not move a locked version (tests/deploy checks).
$(VENV)/.installed: $(VENV)/.created pyproject.toml requirements.lock
	$(PIP) install -q --require-hashes -r requirements.lock
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.created pyproject.toml requirements.lock
	$(PIP) install -q --require-hashes -r requirements.lock
	$(PIP) install -q -e '.[test,bench,journal,fleet,release]'
	touch $@

venv: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/kassabro demo

# Debian packages the tests run for real: a Mosquitto broker, headless Chromium,
# shellcheck for install.sh, sqlite3 for inspection, strace for tools/faults (fsync faults).
deps-system:
	@missing=""; for p in $(APT_TEST_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

deps-test: deps-system $(VENV)/.installed-test

# The checks CI runs before the tests; tool versions are pinned in the test extra.
check: deps-test
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: deps-test
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Everything but the tests marked slow (subprocess agents, browsers, chaos, e2e,
# install and demo): the loop to run while changing code.
test-fast: deps-test
	$(VENV)/bin/pytest -q -p no:cacheprovider -m "not slow and not soak" $(PYTEST_ARGS)

# The fast suite under CPython 3.13 (Raspberry Pi OS 13 trixie's python3), in its own .venv313
# from the same lock. The interpreter is found as tests/deploy/bundles.py's find_python finds it:
# python3.13 on PATH, else pyenv's newest 3.13.x. Debian 12 has no python3.13 package and none
# can be fetched here, so without one this stops with how to install it (README, Development).
VENV313 := .venv313
test-py313: deps-system
	@py313="$$($(PYTHON) -c 'from tests.deploy.bundles import find_python; print(find_python("3.13") or "")')"; \
	if [ -z "$$py313" ]; then \
		echo "make test-py313: no CPython 3.13 here (python3.13 on PATH or pyenv's versions/3.13.*)." >&2; \
		echo "  Debian 12 has no python3.13 package: pyenv install 3.13 (README.md, Development)." >&2; \
		exit 1; \
	fi; \
	if [ ! -x $(VENV313)/bin/python ] || ! $(VENV313)/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 13)'; then \
		rm -rf $(VENV313) && "$$py313" -m venv $(VENV313) && $(VENV313)/bin/python -m pip install -q --upgrade pip; \
	fi
	$(VENV313)/bin/python -m pip install -q --require-hashes -r requirements.lock
	$(VENV313)/bin/python -m pip install -q -e '.[test,bench,journal,fleet]'
	$(VENV313)/bin/pytest -q -p no:cacheprovider -m "not slow and not soak" $(PYTEST_ARGS)

soak: deps-test
	KASSABRO_SOAK=1 $(VENV)/bin/pytest -q -p no:cacheprovider -m soak tests/chaos

bench: deps-test
	$(PY) -m bench

# requirements.lock: the runtime dependencies ([project] dependencies in
# pyproject.toml), every version pinned with the hashes of all its files, so one
# lock serves every platform's bundle (docs/deployment.md, "The lock").
lock: $(VENV)/.installed-test
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml

# dist/kassabro-<version>-py<XY>-<platform>.tar.gz: py313 (trixie) and py311 (bookworm), each for
# Raspberry Pi OS 64- and 32-bit and this machine.
dist: $(VENV)/.installed-test
	$(PY) deploy/dist.py --out dist

clean:
	rm -rf $(VENV) demo-data build dist *.egg-info
