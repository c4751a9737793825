# Astrid — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: cluster-demo help setup demo test check typecheck lint format bench docs build chart-crds

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: ## install npm packages (from package-lock.json) and nats-server
	@bash scripts/setup.sh

demo: setup ## run the local shape on its embedded defaults
	@bash scripts/demo.sh

cluster-demo: setup ## the cluster shape on this machine: control plane + kubelet harness + operator, one AgentSession
	@bash scripts/setup-test-tools.sh
	@npx tsx scripts/cluster-demo.ts

test: ## set up, lint, typecheck and run the whole suite; ends with "N passed, N failed"
	@bash scripts/test.sh

typecheck: setup ## tsc --noEmit
	@npx tsc --noEmit -p tsconfig.json

lint: setup ## biome check
	@npx biome check .

format: setup ## biome format + safe fixes
	@npx biome check --write .

build: setup ## bundle the CLIs into dist/ (setup does it too)
	@node scripts/build.mjs

chart-crds: ## copy the generated crds/*.yaml into charts/astrid/crds/
	@rm -f charts/astrid/crds/*.yaml && cp crds/*.yaml charts/astrid/crds/

docs: setup ## regenerate generated files: topic reference, CRDs (and their chart copies)
	@npx tsx scripts/gen-docs.ts
	@npx tsx scripts/gen-crds.ts
	@npx tsx scripts/sync-examples.ts
	@rm -f charts/astrid/crds/*.yaml && cp crds/*.yaml charts/astrid/crds/

bench: setup ## run benchmarks (all, or SUITES="bus security")
	@npx tsx bench/run.ts $(SUITES)

.PHONY: tools
tools: ## build etcd, kube-apiserver, kube-controller-manager, kubectl for the tests (TOOLS="all" adds helm)
	@bash scripts/build-tools.sh $(TOOLS)
