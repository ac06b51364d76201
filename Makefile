# edgestack: `make test` runs every check CI runs; `make up` runs the stack.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse --short HEAD 2>/dev/null)
IMAGE    ?= edgestack
BINARIES := $(notdir $(wildcard cmd/*))
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)
# docker compose (v2 plugin) or docker-compose (v1), whichever this machine has.
COMPOSE  ?= $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)
# Bound for the short fuzzing pass of `make fuzz`: a duration, or a count
# of inputs such as 20000x (with Go 1.26 a duration can end in a spurious
# "context deadline exceeded", go.dev/issue/75804; a count cannot).
FUZZTIME ?= 5s
STACK    = $(COMPOSE) -p edgestack -f deploy/compose.yaml

.PHONY: all build test fmt-check vet cross unit fuzz images up down dev e2e bench clean

all: build

build:
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

test: fmt-check vet cross unit

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Everything still builds for 32-bit ARM (a Raspberry Pi edge box): int is
# 32 bits there, so a constant or a conversion that overflows it is found
# here, not on the user's machine.
cross:
	GOOS=linux GOARCH=arm GOARM=7 $(GO) build ./...

unit:
	$(GO) test -race -timeout 15m ./...

# Each fuzz target for FUZZTIME, beyond its checked-in corpus (which `unit` runs).
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Static binaries for the scratch image, then the image itself (no pull).
images:
	@rm -rf build/image && mkdir -p build/image/bin
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o build/image/bin/ ./cmd/... ./deploy/demoapi
	# The demo stack's local ACME CA, pinned by the tool line in go.mod.
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '-s -w' -o build/image/bin/ github.com/letsencrypt/pebble/v2/cmd/pebble
	DOCKER_BUILDKIT=0 docker build -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

up: images
	@if [ -z "$(COMPOSE)" ]; then echo "neither 'docker compose' nor 'docker-compose' found"; exit 1; fi
	DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0 $(STACK) up -d --build
	$(STACK) ps

down:
	$(STACK) down --volumes --remove-orphans

# The same topology as local processes on loopback, for machines without Docker.
dev:
	./deploy/dev.sh

e2e: images
	./deploy/e2e.sh

bench:
	$(GO) run ./bench/cmd/bench $(BENCHFLAGS)

clean:
	rm -rf bin build
