# Two commands for a fresh machine: `make demo` and `make test`. Every target
# bootstraps .venv on first use, so nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The Pico tier's emulator (rp2040js, pinned in the lockfile).
PICO   := boards/sim/pico
NPM_STAMP := $(PICO)/node_modules/.installed

.PHONY: demo test bench soak sim lint clean radius-tools postgresql browser-tools screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(NPM_STAMP): $(PICO)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(PICO) --no-audit --no-fund --silent && touch $@; \
	else echo "npm not found: the Pico tier cannot run here"; fi

# The RADIUS and PAM tests' real clients and module (Debian packages), installed only where
# missing; where apt-get cannot (not root, no network) those tests skip with one line each.
RADIUS_DEBS := freeradius-utils libpam-radius-auth pamtester
APT_GET := apt-get -y -q -o DPkg::Lock::Timeout=300

radius-tools:
	@if ! command -v radclient >/dev/null 2>&1 || ! command -v pamtester >/dev/null 2>&1 \
		|| ! dpkg-query -W -f='$${Status}' libpam-radius-auth 2>/dev/null | grep -q 'ok installed'; then \
		echo "installing $(RADIUS_DEBS)"; \
		$(APT_GET) install $(RADIUS_DEBS) >/dev/null 2>&1 \
		|| { $(APT_GET) update >/dev/null 2>&1 && $(APT_GET) install $(RADIUS_DEBS) >/dev/null 2>&1; } \
		|| echo "cannot install $(RADIUS_DEBS): the RADIUS/PAM tests with them will skip"; \
	fi
# PostgreSQL's server binaries for the verifier tests on PostgreSQL, which start a throwaway server
# of their own (bench/pgserver.py; not Debian's cluster, if the package makes one). Installed with
# apt-get only where missing; where they cannot be, the PostgreSQL cases skip with one line.
PG_BINS := /usr/lib/postgresql/*/bin/initdb
postgresql:
	@if ls $(PG_BINS) >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's postgresql for the verifier tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get -qq update && apt-get -qq install -y --no-install-recommends postgresql; } >/dev/null 2>&1 \
			|| echo "could not install postgresql: the PostgreSQL cases will skip"; \
	else echo "no PostgreSQL server binaries and no root apt-get to install them: the PostgreSQL cases will skip"; fi

# The web pages' browser test drives Debian's Chromium through its chromedriver (Selenium, never a
# browser download); installed only where missing, and where apt-get cannot, that test skips in one line.
BROWSER_DEBS := chromium chromium-driver

browser-tools:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		echo "installing $(BROWSER_DEBS)"; \
		$(APT_GET) install $(BROWSER_DEBS) >/dev/null 2>&1 \
		|| { $(APT_GET) update >/dev/null 2>&1 && $(APT_GET) install $(BROWSER_DEBS) >/dev/null 2>&1; } \
		|| echo "cannot install $(BROWSER_DEBS): the browser test will skip"; \
	fi

# The README's screenshots: the browser test, writing its PNGs into docs/screenshots as well.
screenshots: $(STAMP) browser-tools
	KEYFOB_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/test_web_browser.py

demo: $(STAMP) $(NPM_STAMP)
	$(BIN)/python -m keyfob.demo

# Three workers on CI's two cores: the Pico tier's tests wait in emulated idle time (kept at or
# behind wall time) and the unix tier's on mpremote and process starts, so a third worker fills the
# cores that two leave idle. The sim's clock leaves out run-queue waits (boards/sim/hw/bus.py), so
# an oversubscribed host cannot shorten a timed press.
test: $(STAMP) $(NPM_STAMP) radius-tools postgresql browser-tools
	$(BIN)/python -m pytest -n 3 --dist worksteal tests

bench: $(STAMP) $(NPM_STAMP)
	$(BIN)/python -m bench

soak: $(STAMP)
	$(BIN)/python -m bench.soak

sim: $(STAMP) $(NPM_STAMP)
	$(BIN)/keyfob sim run

lint: $(STAMP)
	$(BIN)/ruff check host tests bench
	$(BIN)/ruff format --check host tests bench
	$(BIN)/python -m keyfob.build --check

clean:
	rm -rf $(VENV) build .pytest_cache $(PICO)/node_modules
