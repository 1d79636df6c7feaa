# arconv: `make run` starts the mesh, `make test` runs the suite. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(shell find protos third_party -name '*.proto')
PYTEST_ARGS ?=

.PHONY: setup run test lint protos bench clean lock node breaking api-baseline web browser-setup \
	image image-smoke

setup: $(VENV)/.installed gen/.stamp node

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
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
WEB_SRC := $(wildcard web/src/*.ts) web/index.html web/tsconfig.json web/buf.gen.yaml

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

run: setup
	$(PY) -m services.mesh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
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

# Every service and the edge from the image, in containers, and a Converse through the edge.
image-smoke: setup
	deploy/smoke-test.sh

bench: setup
	$(PY) -m bench

lock:
	rm -rf /tmp/arconv-lock && $(PYTHON) -m venv /tmp/arconv-lock
	/tmp/arconv-lock/bin/pip install --quiet -r requirements.in
	{ echo "# Pinned lock of requirements.in (pip freeze in a fresh venv). Regenerate with: make lock"; \
	  /tmp/arconv-lock/bin/pip freeze; } > requirements.txt

clean:
	rm -rf gen var .pytest_cache .mypy_cache .ruff_cache
