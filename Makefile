# make        CPU build (native instruction set): ./conch and ./conchd
# make cuda   the same with ggml's CUDA backend
# make test   everything CI runs
SHELL := /bin/bash
JOBS  ?= $(shell nproc)
GO    ?= go
OLLAMA_DIR = $(shell $(GO) mod download -json github.com/ollama/ollama >/dev/null && $(GO) list -m -f '{{.Dir}}' github.com/ollama/ollama)
BUILD ?= build
CUDA  ?= OFF
TAGS  := $(if $(filter ON,$(CUDA)),cuda,)
GOCMD  = scripts/go

.PHONY: all cuda native test bench clean fmt vet

all: native
	$(GOCMD) build -tags '$(TAGS)' -o conch ./cmd/conch
	$(GOCMD) build -tags '$(TAGS)' -o conchd ./cmd/conchd

cuda:
	$(MAKE) CUDA=ON all

# cmake only rebuilds what changed; it is configured again when the backend changes or
# CMAKE_ARGS are given (make cuda CMAKE_ARGS=-DCMAKE_CUDA_ARCHITECTURES=90).
native:
	@if [ ! -f $(BUILD)/CMakeCache.txt ] || ! grep -q "CONCH_CUDA:BOOL=$(CUDA)" $(BUILD)/CMakeCache.txt || [ -n "$(CMAKE_ARGS)" ]; then \
	  cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DOLLAMA_DIR="$(OLLAMA_DIR)" -DCONCH_CUDA=$(CUDA) $(CMAKE_ARGS) >/dev/null; fi
	@cmake --build $(BUILD) -j$(JOBS) 2>&1 | grep -Ev '^(\[|gmake)' || true
	@test -f $(BUILD)/lib/libconch.a || { echo "native build failed"; exit 1; }
	@mkdir -p $(BUILD)/include
	@d="$(OLLAMA_DIR)"; cp -u $$d/llama/llama.cpp/include/llama.h $$d/ml/backend/ggml/ggml/include/*.h bindings/conch.h $(BUILD)/include/
	@chmod u+w $(BUILD)/include/*.h

test: all
	$(GOCMD) vet -tags '$(TAGS)' ./...
	$(GOCMD) test -tags '$(TAGS)' -timeout 25m $(TESTFLAGS) ./...

bench: all
	scripts/bench

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BUILD) conch conchd
