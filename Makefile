# Klaviyo lead actions: everyday commands.
#
#   make venv       project virtualenv (.venv) from requirements-dev.txt
#   make lint       ruff, mypy and cfn-lint
#   make test       the test suite
#   make template   template.yaml from its source in stack/
#   make sam        the AWS SAM CLI, in its own virtualenv (.tools/sam)
#   make validate   sam validate --lint
#   make build      sam build
#   make deploy     sam deploy (ENV=dev|prod; GUIDED=1 the first time: it saves the secret's ARN)
#   make demo       the local demo
#   make serve      the handlers behind http://127.0.0.1:8080 (PORT=..., VERBOSE=1)
#   make invoke     one event file through its function (ACTION=..., EVENT=...)
#   make import     a lead file through the local stack (FILE=leads.csv ACTION=..., DRY_RUN=1,
#                   METADATA="klaviyo.list_id=..."): report and results file beside it
#   make mirror     a mirror lead file through the local stack (FILE=people.csv LIST=Y6nRLr,
#                   DRY_RUN=1, METADATA="mirror-confirm-removals=all"): the list becomes the file
#   make trail      the local stack's lead trail, with the stack's Athena queries (DuckDB):
#                   EMAIL=..., PHONE=..., VENDOR=..., QUERY=<named query>, SQL="...", LIST=1;
#                   DIR=... for a copy of a real trail bucket (aws s3 sync s3://<bucket>/trail DIR/trail)
#   make events     regenerate events/
#   make spec-rules regenerate the emulator's rules table from Klaviyo's OpenAPI document
#   make simulate   the fleet simulation: SEEDS=10000 seeds on JOBS=2 processes, or one SEED=n
#                   (LEADS=2,5: only those leads), shrunk and traced when it fails
#   make soak       10,000 leads, 4 consumer processes, Klaviyo faults, duplicates (~16 min)
#   make bench      per-lead vs coalesced for every action, overhead, memory, fleet pacing (~20 min)
#   make conformance  every call (profiles, lists, events, bulk import/subscribe/unsubscribe jobs),
#                     emulator vs a real test account (KLAVIYO_API_KEY=... CONFIRM=1); probes of
#                     search and segment lag, imports, subscribe apply time and rules, latency,
#                     limit windows -> conformance.json (OUT=dir)
#
# Sections below: settings, development environment, quality, AWS SAM, project commands.

.DEFAULT_GOAL := help
SHELL := /bin/sh

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------

PYTHON ?= python3
VENV ?= .venv
# What `sam build` and `sam deploy` read, written by stack/render.py from stack/*.yaml.
TEMPLATE ?= template.yaml
TEMPLATE_SOURCES := $(wildcard stack/*.yaml) stack/render.py
# samconfig.toml environment used by `make deploy`.
ENV ?= default
# `make invoke`: the function and the event file it runs.
ACTION ?= create_profile
EVENT ?= events/$(ACTION)/sqs.json

SAM_VENV ?= .tools/sam
SAM_CLI_VERSION ?= 1.170.0
SAM := $(SAM_VENV)/bin/sam
export SAM_CLI_TELEMETRY ?= 0

# `sam build` refuses a python3 that is not really 3.12 (a pyenv shim fails its binary
# check), so put the real 3.12 interpreter first on PATH when pyenv manages Pythons here.
PY312_PREFIX := $(shell command -v pyenv >/dev/null 2>&1 && pyenv prefix 3.12 2>/dev/null)
BUILD_PATH := $(if $(PY312_PREFIX),$(PY312_PREFIX)/bin:)$(PATH)

# `sam validate --lint` works offline; placeholder credentials keep it from looking for real ones.
OFFLINE_AWS_ENV := AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
	AWS_SESSION_TOKEN=testing AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1}

.PHONY: help
help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

# ---------------------------------------------------------------------------
# Development environment
# ---------------------------------------------------------------------------

.PHONY: venv
venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt layers/shared/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# ---------------------------------------------------------------------------
# Quality
# ---------------------------------------------------------------------------

.PHONY: lint
lint: venv $(TEMPLATE)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/cfn-lint $(TEMPLATE) -a cfn_lint_serverless.rules

# ---------------------------------------------------------------------------
# AWS SAM
# ---------------------------------------------------------------------------

.PHONY: template
template: $(TEMPLATE)

# Only when stack/ is newer (a fresh clone's template.yaml is not): deploying needs no .venv.
$(TEMPLATE): $(TEMPLATE_SOURCES)
	$(MAKE) --no-print-directory venv
	$(VENV)/bin/python -m stack.render

# The SAM CLI pins its own boto3 and cfn-lint, so it lives apart from the project's .venv.
.PHONY: sam
sam: $(SAM)

$(SAM):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)

.PHONY: validate
validate: $(SAM) $(TEMPLATE)
	env $(OFFLINE_AWS_ENV) $(SAM) validate --lint --template-file $(TEMPLATE)

.PHONY: build
# devtools/sam_build.py drops SAM's warning for each function without a requirements.txt (their
# dependencies are the layer) and suggests make deploy, not sam deploy --guided.
build: $(SAM) $(TEMPLATE)
	PATH="$(BUILD_PATH)" $(PYTHON) -m devtools.sam_build \
		$(if $(filter deploy,$(MAKECMDGOALS)),,--next "make deploy ENV=$(ENV) (GUIDED=1 the first time)") \
		-- $(SAM) build --template-file $(TEMPLATE)

# The first, guided deploy of an environment asks for the secret's ARN and saves it under that
# environment (--config-env is what it offers to save to); later deploys read it from there.
# Without it CloudFormation would refuse the stack only after the build and the upload.
.PHONY: deploy
deploy: deploy-check build
	@echo "Deploying samconfig.toml environment '$(ENV)'."
	$(SAM) deploy --config-env $(ENV) $(if $(GUIDED),--guided)
	$(if $(GUIDED),$(PYTHON) -m devtools.deploy_check $(ENV) --guided)

.PHONY: deploy-check
deploy-check:
	@$(if $(GUIDED),true,$(PYTHON) -m devtools.deploy_check $(ENV))

.PHONY: clean-build
clean-build:
	rm -rf .aws-sam

# ---------------------------------------------------------------------------
# Project commands (their implementations live elsewhere in the tree)
# ---------------------------------------------------------------------------

.PHONY: test
test: venv
	PYTHONHASHSEED=0 $(VENV)/bin/python -m pytest -n 2 -q

.PHONY: demo
demo: venv
	$(VENV)/bin/python -m devtools.runner demo

.PHONY: serve
serve: venv
	$(VENV)/bin/python -m devtools.runner serve --port $(or $(PORT),8080) $(if $(VERBOSE),--verbose)

.PHONY: invoke
invoke: venv
	$(VENV)/bin/python -m devtools.runner invoke $(ACTION) $(EVENT)

.PHONY: import
import: venv
	@test -n "$(FILE)" -a -n "$(ACTION)" || { echo "usage: make import FILE=leads.csv ACTION=subscribe_profile_to_list [DRY_RUN=1] [METADATA='klaviyo.list_id=...']"; exit 2; }
	$(VENV)/bin/python -m devtools.lead_file_import "$(FILE)" $(ACTION) $(if $(DRY_RUN),--dry-run) $(foreach m,$(METADATA),--metadata "$(m)")

.PHONY: mirror
mirror: venv
	@test -n "$(FILE)" -a -n "$(LIST)" || { echo "usage: make mirror FILE=people.csv LIST=<list_id> [DRY_RUN=1] [METADATA='mirror-confirm-removals=all']"; exit 2; }
	$(VENV)/bin/python -m devtools.mirror_import "$(FILE)" "$(LIST)" $(if $(DRY_RUN),--dry-run) $(foreach m,$(METADATA),--metadata "$(m)")

.PHONY: trail
trail: venv
	$(VENV)/bin/python -m devtools.trail $(if $(DIR),--dir "$(DIR)") $(if $(EMAIL),--email "$(EMAIL)")$(if $(PHONE),--phone "$(PHONE)")$(if $(VENDOR),--vendor "$(VENDOR)")$(if $(QUERY),--query "$(QUERY)")$(if $(SQL),--sql "$(SQL)")$(if $(LIST),--list)

.PHONY: events
events: venv
	$(VENV)/bin/python -m devtools.events

.PHONY: spec-rules
spec-rules: venv
	$(VENV)/bin/python -c 'import sys; from devtools.klaviyo_emulator.operations import SERVED_OPERATIONS; from devtools.klaviyo_emulator.spec_rules import main; sys.exit(main(SERVED_OPERATIONS))'

.PHONY: simulate
simulate: venv
	PYTHONHASHSEED=0 $(VENV)/bin/python -m devtools.simulation $(if $(SEED),--seed $(SEED) $(if $(LEADS),--leads $(LEADS)),--seeds $(or $(SEEDS),10000) --start $(or $(START),1) --jobs $(or $(JOBS),2)) $(SIMULATE_ARGS)

.PHONY: soak
soak: venv
	$(VENV)/bin/python -m devtools.soak $(SOAK_ARGS)

.PHONY: bench
bench: venv
	$(VENV)/bin/python -m bench.run --install --json bench/results/latest.json $(BENCH_ARGS)

.PHONY: conformance
conformance: venv
	$(if $(OUT),OUT=$(OUT)) $(VENV)/bin/python -m devtools.conformance $(CONFORMANCE_ARGS)
