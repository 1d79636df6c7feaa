# arconv: `make run` starts the mesh, `make test` runs the suite. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(shell find protos third_party -name '*.proto')
PYTEST_ARGS ?=
# pytest-xdist workers: one per core. Tests of one file share a worker (module fixtures, and
# a file's tests may lean on each other's order), each server on a free port, each test in its
# own tmp_path, PostgreSQL database and Redis key prefix.
PYTEST_WORKERS ?= auto
XDIST := -n $(PYTEST_WORKERS) --dist loadfile
# make test-fast: unit and contract tests, without a real Envoy, a browser or a slow test.
FAST := not envoy and not browser and not slow
# Test runs keep compiled bytecode (pytest's rewritten test modules too) in one folder under the
# venv, even where the environment asks Python not to write any: collecting the suite then
# takes each worker 4 s of CPU instead of 7, and every service a test starts as a process
# imports faster.
TEST_ENV := env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(CURDIR)/$(VENV)/pycache

.PHONY: setup run test test-fast lint protos bench soak clean lock node breaking api-baseline web \
	browser-setup image image-smoke manifests cluster screenshot

setup: $(VENV)/.installed gen/.stamp node

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@# The generated package and the repository root are importable from anywhere.
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	  printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/gen" > "$$site/arconv-local.pth"
	@touch $@

gen/.stamp: $(VENV)/.installed $(PROTOS) scripts/gen_protos.py
	$(PY) scripts/gen_protos.py
	@touch $@

protos: $(VENV)/.installed
	$(PY) scripts/gen_protos.py
	@touch gen/.stamp

# Node tools: the Khronos glTF validator (tools/gltf), and three.js + three-vrm with
# playwright-core for rendering avatars in Chromium (tools/render).
node: tools/gltf/node_modules/.installed tools/render/node_modules/.installed

tools/gltf/node_modules/.installed: tools/gltf/package-lock.json
	npm ci --prefix tools/gltf --no-audit --no-fund --loglevel=error
	@touch $@

tools/render/node_modules/.installed: tools/render/package-lock.json
	npm ci --prefix tools/render --no-audit --no-fund --loglevel=error
	@touch $@

# The browser client (web/): npm packages, TypeScript generated from the protos by
# protoc-gen-es (web/gen), type-checked and bundled by esbuild (web/dist). Neither is committed.
WEB_SRC := $(wildcard web/src/*.ts) web/index.html web/tsconfig.json web/buf.gen.yaml web/package.json

web: web/dist/.stamp

web/node_modules/.installed: web/package-lock.json
	npm ci --prefix web --no-audit --no-fund --loglevel=error
	@touch $@

web/dist/.stamp: web/node_modules/.installed $(VENV)/.installed $(PROTOS) $(WEB_SRC)
	cd web && ../$(VENV)/bin/buf generate
	npm run --prefix web --silent build
	@touch $@

# The browser test's needs: the web client, and Debian's Chromium (installed when we are root).
browser-setup: setup web
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "Chromium is missing: install Debian's chromium package as root (apt-get install chromium)"; \
	    exit 1; \
	  fi; \
	fi

# The README's picture of the client mid-reply (docs/client.png), from a real mesh in Chromium.
screenshot: browser-setup
	$(PY) -m tests.edge.screenshot docs/client.png

run: setup web
	$(PY) -m services.mesh

# The replicated topology on this machine: two replicas of every service on the local
# PostgreSQL and Redis, the edge in front of both (services/cluster.py).
cluster: setup
	$(PY) -m services.cluster

test: setup
	$(TEST_ENV) $(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: setup
	$(TEST_ENV) $(PY) -m pytest $(XDIST) -m "$(FAST)" $(PYTEST_ARGS)

lint: setup web
	npm run --prefix web --silent check
	npm run --prefix web --silent lint
	$(VENV)/bin/ruff check services tests bench scripts
	$(VENV)/bin/ruff format --check services tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/buf lint

# The published API: buf breaking compares the protos with api/baseline.binpb (a buf image).
# After a deliberate, compatible API change: make api-baseline, and commit the new image.
breaking: setup
	$(VENV)/bin/buf breaking protos --against api/baseline.binpb

api-baseline: setup
	$(VENV)/bin/buf build protos -o api/baseline.binpb

# The container image (deploy/Containerfile) with podman. BASE_IMAGE: the python slim image by
# default; ARCONV_IMAGE_BASE=mmdebstrap (or auto, when no registry answers) builds a Debian
# base from Debian's packages instead. IMAGE names the result.
image:
	deploy/build-image.sh

# The edge configurations in deploy/kubernetes, regenerated by services/edge.py with the command
# on each file's second line (after a change to envoy/envoy.yaml or the generator).
manifests: setup
	@for f in $$(find deploy/kubernetes -name edge-envoy.yaml); do \
	  cmd="$$(sed -n 2p $$f | sed 's|^# python |$(PY) |')"; \
	  $$cmd > $$f.new && mv $$f.new $$f && echo "$$f: $${cmd#$(PY) }"; \
	done

# Every service and the edge from the image, in containers, and a Converse through the edge;
# then the dev manifests' edge Deployment under podman kube play.
image-smoke: setup
	deploy/smoke-test.sh

bench: setup
	$(PY) -m bench

# N conversations for M minutes through the edge on Redis, a replica killed and Redis restarted
# on the way (SOAK_CONVERSATIONS, SOAK_MINUTES); report in bench/soak.md. Not part of make test.
soak: setup
	$(PY) -m bench.soak

# The locks, from pyproject.toml: requirements.txt pins the runtime dependencies with every
# extra (all the image installs), requirements-dev.txt the dev group on top of them (make setup
# installs both). Each is a pip freeze in a fresh virtualenv.
LOCK := /tmp/arconv-lock
lock:
	rm -rf $(LOCK) && $(PYTHON) -m venv $(LOCK)
	$(LOCK)/bin/pip install --quiet --upgrade pip
	$(LOCK)/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  print(*p["dependencies"], *(d for e in p["optional-dependencies"].values() for d in e), sep="\n")' \
	  > $(LOCK)/runtime.in
	$(LOCK)/bin/pip install --quiet -r $(LOCK)/runtime.in
	$(LOCK)/bin/pip freeze > $(LOCK)/runtime.txt
	{ echo "# Runtime lock: pyproject.toml's dependencies with every extra (pip freeze in a fresh venv); all the image installs. Regenerate with: make lock"; \
	  cat $(LOCK)/runtime.txt; } > requirements.txt
	$(LOCK)/bin/pip install --quiet --group dev -c $(LOCK)/runtime.txt
	{ echo "# Development lock: pyproject.toml's dev group on top of the runtime lock. Regenerate with: make lock"; \
	  echo "-r requirements.txt"; \
	  $(LOCK)/bin/pip freeze | grep -vxF -f $(LOCK)/runtime.txt; } > requirements-dev.txt

clean:
	rm -rf gen var .pytest_cache .mypy_cache .ruff_cache
