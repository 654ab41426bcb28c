# nspawn.nixos: every quality gate, from nothing, on a Debian 12 machine as root.
#
#   make test         everything CI runs (sanity, units, lint, build, integration, molecule, reliability, compat)
#   make compat       every other ansible-core version the collection claims: sanity, units, one integration target
#   make demo         boot a lab host and show how to reach it
#   make bench        benchmarks on lab hosts; figures into benchmarks/RESULTS.md (never fails on slowness)
#   make reliability  bad input and faults on lab hosts, each against a snapshot of the host
#
# Nothing here needs more than Debian's package archive and PyPI.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
BIN := $(VENV)/bin
# Where `ansible-doc`, antsibull-docs and the tests find the collection by its name.
COLLECTIONS_ROOT := $(CURDIR)/tests/output/collections
COLLECTION_LINK := $(COLLECTIONS_ROOT)/ansible_collections/nspawn/nixos
# ansible-test needs the collection at a real .../ansible_collections/nspawn/nixos path.
SANITY_ROOT ?= /var/tmp/nspawn-nixos-sanity
SANITY_COPY := $(SANITY_ROOT)/ansible_collections/nspawn/nixos
SANITY_PYTHON ?= 3.11
GET_PIP_CACHE := $(HOME)/.ansible/test/cache
# ansible-core 2.19's ansible-test bootstraps pip 24.2; list more versions here if that changes.
# (tests/compat/run.sh reads the versions of the other ansible-core versions from their ansible-test.)
GET_PIP_VERSIONS := 24_2
# The other ansible-core versions of requires_ansible (tests/compat/versions); 2.19 is the main venv's.
COMPAT_VERSIONS ?= $(shell awk '!/^\#/ && NF {print $$1}' tests/compat/versions)
COMPAT_LOWEST := $(firstword $(COMPAT_VERSIONS))
COMPAT_HIGHEST := $(lastword $(COMPAT_VERSIONS))
# The collection as an execution environment: ansible-builder create writes the build context here.
EE_CONTEXT := $(CURDIR)/tests/output/ee
COLLECTION_VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
LAB := PYTHONPATH=$(CURDIR)/tests $(BIN)/python -m lab
LAB_NAME ?= dev
LAB_RELEASES ?= 12
# The lab hosts the module integration targets run on in `make test` (tests/lab/images.py RELEASES;
# "all": the whole matrix, Debian 11, 12, 12-backports, 12-noimportd, 13, sid). The matrix is split
# to fit CI's time: the targets on 12, 12-noimportd, 13 and sid; the default molecule scenario on all
# six (11 and 12-backports run the role there); the other scenarios and reliability on 12 and 13.
# `make integration MATRIX_RELEASES=all` runs every target on every host (about 36 min here).
MATRIX_RELEASES ?= 12 12-noimportd 13 sid
# What of `make compat` runs in `make test`: the lowest and the highest claimed version (compat for all five).
TEST_COMPAT ?= compat-quick
PYTEST_ARGS ?=

APT_PACKAGES := systemd-container debootstrap socat xz-utils pigz nix-bin openssh-client e2fsprogs procps \
                util-linux shellcheck git make chromium

export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS_ROOT)
export PATH := $(BIN):$(PATH)
export ANSIBLE_NOCOLOR := 1
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0

.PHONY: help deps apt-deps venv collection-link test sanity units lint docs-lint changelog-lint build \
        docs docs-build docs-browser integration molecule reliability compat compat-quick ee-context ee-check workflow-lint test-real bench lab-build lab-up lab-down lab-down-all lab-status demo clean

help:
	@echo "make demo        boot a lab host (real systemd) and print how to reach it"
	@echo "make test        every quality gate: sanity units lint build integration molecule reliability"
	@echo "make sanity | units | lint | build | integration | molecule | reliability"
	@echo "make docs        the docs site in tests/output/docs/build/html (also in make lint), checked in headless Chromium"
	@echo "make compat      sanity, units, one integration target under every other ansible-core version claimed"
	@echo "make ee-context  the execution environment's build context (ansible-builder create; needs make build)"
	@echo "make test-real   opt-in: the default molecule scenario with the real upstream image (skipped offline)"
	@echo "make bench       benchmarks on lab hosts, results in benchmarks/RESULTS.md"
	@echo "make lab-build | lab-up [LAB_RELEASES='12 13 sid'] | lab-status | lab-down"
	@echo "make integration MATRIX_RELEASES=all   every target on every lab host (default: 12 12-noimportd 13 sid)"

# --- installation -------------------------------------------------------------------------

# The Python tools (venv) suffice for units, lint and build; the lab's gates also need Debian packages (apt-deps).
deps: venv collection-link apt-deps

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: tests/requirements.txt tests/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r tests/requirements.txt -c tests/constraints.txt
	$(BIN)/pip check
	touch $@

collection-link:
	@mkdir -p $(dir $(COLLECTION_LINK))
	@[ -L $(COLLECTION_LINK) ] || ln -sfn ../../../../.. $(COLLECTION_LINK)

# --- the gates ----------------------------------------------------------------------------

# Labs started by this run carry its NSPAWN_LAB_RUN_ID; whatever a failed step left of them is
# downed at the end (and nothing of another run on the same machine).
test: deps
	@start=$$(date +%s); rc=0; run_id=make-test-$$$$-$$start; \
	NSPAWN_LAB_RUN_ID=$$run_id $(MAKE) --no-print-directory sanity units lint build integration molecule reliability $(TEST_COMPAT) || rc=$$?; \
	$(LAB) down --all --run-id $$run_id >/dev/null 2>&1 || true; \
	echo "make test: rc=$$rc in $$(( $$(date +%s) - start )) s"; exit $$rc

# A copy of the tracked (and new, not ignored) files at a path ansible-test accepts.
sanity: deps
	@mkdir -p $(GET_PIP_CACHE)
	@for v in $(GET_PIP_VERSIONS); do \
	  install -m 0644 tests/sanity/get-pip/get_pip_offline.py $(GET_PIP_CACHE)/get_pip_$$v.py; done
	@rm -rf $(SANITY_COPY) && mkdir -p $(SANITY_COPY)
	@git ls-files -z --cached --others --exclude-standard | \
	  while IFS= read -r -d '' f; do [ -e "$$f" ] && printf '%s\0' "$$f"; done | \
	  tar --null -T - -cf - | tar -C $(SANITY_COPY) -xf -
	cd $(SANITY_COPY) && $(BIN)/ansible-test sanity --venv --python $(SANITY_PYTHON) --color no

units: venv collection-link
	$(BIN)/pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

lint: venv collection-link docs-lint docs changelog-lint workflow-lint ee-check py-lint
	$(BIN)/ansible-lint --offline -q

# ruff (pyflakes, pycodestyle; ruff.toml) over all Python, and mypy (mypy.ini) over the plugins, imported as the
# collection's packages through the tests/output/collections link.
py-lint: venv collection-link
	$(BIN)/ruff check --no-cache .
	cd tests/output/collections && $(BIN)/mypy --config-file $(CURDIR)/mypy.ini --cache-dir /dev/null \
	  -p ansible_collections.nspawn.nixos.plugins

# The GitHub Actions workflow (.github/workflows/), checked with actionlint (it is not run here).
workflow-lint: venv
	$(BIN)/actionlint -no-color .github/workflows/*.yml
	@echo "actionlint: $$(ls .github/workflows/*.yml | wc -l) workflow(s) ok"

# ansible-builder create: the build context of the execution environment (no image is built here),
# from the tarball of `make build`.
ee-context: venv
	@tarball=tests/output/build/nspawn-nixos-$(COLLECTION_VERSION).tar.gz; \
	if [ ! -f "$$tarball" ]; then echo "ee-context: $$tarball is missing: run make build first"; exit 1; fi; \
	grep -q "collections/nspawn-nixos-$(COLLECTION_VERSION).tar.gz" execution-environment.yml || { \
	  echo "ee-context: execution-environment.yml does not name nspawn-nixos-$(COLLECTION_VERSION).tar.gz (galaxy.yml's version)"; exit 1; }
	rm -rf $(EE_CONTEXT)
	$(BIN)/ansible-builder create -f execution-environment.yml -c $(EE_CONTEXT) --output-filename Containerfile
	@cmp tests/output/build/nspawn-nixos-$(COLLECTION_VERSION).tar.gz $(EE_CONTEXT)/_build/collections/nspawn-nixos-$(COLLECTION_VERSION).tar.gz
	@grep -qx -- '- name: collections/nspawn-nixos-$(COLLECTION_VERSION).tar.gz' $(EE_CONTEXT)/_build/requirements.yml
	@grep -q 'ansible-galaxy collection install .*-r requirements.yml' $(EE_CONTEXT)/Containerfile
	@echo "ee-context: $(EE_CONTEXT) (Containerfile, the collection tarball, requirements.yml)"

# In `make lint`: the context from a fresh tarball, and the clear failure without one.
ee-check: build
	@out=$$($(MAKE) --no-print-directory ee-context COLLECTION_VERSION=0.0.0-missing 2>&1) \
	  && { echo "ee-check: ee-context passed without a tarball"; exit 1; } || true; \
	echo "$$out" | grep -q "nspawn-nixos-0.0.0-missing.tar.gz is missing: run make build first" \
	  || { echo "ee-check: no clear failure without the tarball:"; echo "$$out"; exit 1; }
	$(MAKE) --no-print-directory ee-context

# The collection's docs (DOCUMENTATION of every plugin, the role's argument spec, docs/docsite's guides
# with rstcheck), as antsibull-docs checks them for a docs site.
docs-lint: venv collection-link
	$(BIN)/antsibull-docs lint-collection-docs --plugin-docs $(COLLECTION_LINK)
	@for m in plugins/modules/*.py plugins/connection/*.py plugins/inventory/*.py plugins/filter/*.py; do \
	  [ -e "$$m" ] || continue; n=$$(basename $$m .py); t=$$(basename $$(dirname $$m)); t=$${t%s}; \
	  $(BIN)/ansible-doc -t $$t nspawn.nixos.$$n >/dev/null || { echo "ansible-doc -t $$t failed: $$n"; exit 1; }; \
	  echo "ansible-doc -t $$t nspawn.nixos.$$n: ok"; done

# The docs site (tests/docs/build_site.py): antsibull-docs and Sphinx, offline, every warning an error,
# into tests/output/docs/build/html; then Debian's Chromium, headless, renders the index and the
# nixos_config page and tests/docs/test_browser.py asserts on the DOM and the screenshot
# (tests/output/docs-nixos_config.png). Part of `make lint`, so of `make test`.
docs: docs-build docs-browser

docs-build: venv collection-link
	@start=$$(date +%s); $(BIN)/python tests/docs/build_site.py; echo "docs-build: $$(( $$(date +%s) - start )) s"

docs-browser: venv collection-link apt-deps docs-build
	@start=$$(date +%s); $(BIN)/pytest -q -p no:cacheprovider tests/docs $(PYTEST_ARGS); echo "docs-browser: $$(( $$(date +%s) - start )) s"

changelog-lint: venv
	$(BIN)/antsibull-changelog lint

# Build the collection tarball and install it into a scratch path, as a user would.
build: venv
	@rm -rf tests/output/build && mkdir -p tests/output/build
	$(BIN)/ansible-galaxy collection build --force --output-path tests/output/build .
	ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/tests/output/build/installed $(BIN)/ansible-galaxy collection install \
	  --offline --force -p tests/output/build/installed tests/output/build/nspawn-nixos-*.tar.gz
	ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/tests/output/build/installed $(BIN)/ansible-galaxy collection list nspawn.nixos
	@tar -tzf tests/output/build/nspawn-nixos-*.tar.gz | grep -E '(^|/)(\.venv|tests/output|__pycache__)/' \
	  && { echo "build: caches or venvs in the tarball"; exit 1; } || true

integration: deps
	NSPAWN_LAB_REQUIRED=1 NSPAWN_LAB_RELEASES="$(MATRIX_RELEASES)" $(BIN)/pytest -p no:cacheprovider tests/integration $(PYTEST_ARGS)

molecule: deps
	@scenarios=$$(ls -d extensions/molecule/*/ | xargs -rn1 basename | grep -v '^shared$$'); \
	[ -n "$$scenarios" ] || { echo "molecule: no scenario in extensions/molecule"; exit 1; }; \
	cd extensions && for s in $$scenarios; do $(BIN)/molecule test -s $$s; done

# Bad input and faults on lab hosts (tests/reliability): fails when something breaks.
reliability: deps
	NSPAWN_LAB_REQUIRED=1 $(BIN)/pytest -p no:cacheprovider tests/reliability $(PYTEST_ARGS)

# The collection under the other ansible-core versions it claims (tests/compat/versions): each in its own
# venv on its own controller Python, ansible-test sanity (in /var/tmp/nspawn-nixos-sanity-compat-<v>), the
# units, the nspawn_info integration target on a Debian 12 lab host; the lowest and the highest version
# also compile and import the modules on the lowest target Python (3.9). Part of `make test`: 651 s for
# all five with warm pip cache and lab cache (compat-quick: 332 s), measured on a busy 2-core machine.
compat: deps
	@if [ -z "$(strip $(COMPAT_VERSIONS))" ]; then echo "compat: no versions (COMPAT_VERSIONS is empty)"; exit 0; fi; \
	for v in $(COMPAT_VERSIONS); do \
	  steps="venv sanity units integration"; \
	  if [ "$$v" = "$(COMPAT_LOWEST)" ] || [ "$$v" = "$(COMPAT_HIGHEST)" ]; then steps="$$steps sanity-lowest"; fi; \
	  tests/compat/run.sh $$v $$steps || exit $$?; done

# A quicker proof: the lowest and the highest version in full (e.g. when CI time runs short).
compat-quick: deps
	@for v in $(COMPAT_LOWEST) $(COMPAT_HIGHEST); do \
	  tests/compat/run.sh $$v venv sanity units integration sanity-lowest || exit $$?; done

# Opt-in, not part of `make test`: the default molecule scenario with the REAL upstream NixOS image instead of
# the lab's fixture. Skipped, saying why, where the image cannot be downloaded (as on the project's own machines).
REAL_IMAGE_URL ?= https://github.com/tfc/nspawn-nixos/releases/latest/download/nixos-system-x86_64-linux.tar.xz
REAL_IMAGE_SHA256 ?=
test-real: deps
	@if ! reason=$$($(BIN)/python -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=20)' \
	    "$(REAL_IMAGE_URL)" 2>&1 | tail -n 1); then \
	  echo "test-real: SKIPPED - $(REAL_IMAGE_URL) cannot be downloaded from this machine ($$reason); no real NixOS ran."; exit 0; fi; \
	echo "test-real: the real image is reachable; the lab hosts need a route to the binary cache for nixos-rebuild"; \
	cd extensions && NSPAWN_REAL_IMAGE_URL="$(REAL_IMAGE_URL)" NSPAWN_REAL_IMAGE_SHA256="$(REAL_IMAGE_SHA256)" \
	  $(BIN)/molecule test -s default

# Figures, not tests: boots its own lab hosts, writes benchmarks/RESULTS.md.
BENCH_ARGS ?=
bench: deps
	PYTHONPATH=$(CURDIR)/tests $(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# --- the lab ------------------------------------------------------------------------------

lab-build: venv
	$(LAB) build

lab-up: deps
	$(LAB) up --name $(LAB_NAME) $(foreach r,$(LAB_RELEASES),--release $(r))

lab-status: deps
	$(LAB) status

lab-down:
	$(LAB) down --name $(LAB_NAME)

lab-down-all:
	$(LAB) down --all

demo: deps
	VENV=$(VENV) scripts/demo.sh

clean: lab-down-all
	rm -rf tests/output $(SANITY_ROOT)
