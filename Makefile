# The Makefile is the CI: .ci/run calls `make lint test`.
GO        ?= go
BIN       := bin/balancer
IMAGE     ?= balancer:dev
DOCKER    ?= docker
STATICCHECK_VERSION := v0.8.2
PKGS      := ./...

.PHONY: build image run test lint tidy fuzz integ bench clean tools certs

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/balancer

# image: the static binary in a FROM scratch image (deploy/Dockerfile), for
# deploy/compose.yaml. The build context holds only what the image needs.
image: build
	rm -rf bin/image && mkdir -p bin/image/data && cp $(BIN) bin/image/
	$(DOCKER) build -f deploy/Dockerfile -t $(IMAGE) bin/image

# run: the main job — a local demo (see README).
run: build
	./scripts/run-local.sh

# certs: a test CA, one certificate per node and one for the CLI (see the
# README's TLS section). Refuses to replace an existing CA: rm -r $(CERTS_DIR)
# or run bin/balancer certs -force.
CERTS_DIR   ?= certs
CERTS_NODES ?= n1,n2,n3
CERTS_HOSTS ?= 127.0.0.1,localhost
certs: build
	./$(BIN) certs -out $(CERTS_DIR) -nodes $(CERTS_NODES) -hosts $(CERTS_HOSTS)

test:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

lint:
	@test -z "$$(gofmt -s -l . | tee /dev/stderr)" || (echo "gofmt -s: files above need formatting" && exit 1)
	$(GO) vet $(PKGS)
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck $(PKGS); else echo "staticcheck not installed (make tools); skipped"; fi
	@! $(GO) list -f '{{join .Imports "\n"}}' ./proxy/pick | grep -q '\.' || (echo "proxy/pick must import only the standard library" && exit 1)
	@! $(GO) list -f '{{join .Imports "\n"}}' $(PKGS) | grep -qx 'github.com/thebalancer/balancer/internal/testutil' || (echo "internal/testutil is for _test.go files only" && exit 1)

tools:
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

tidy:
	$(GO) mod tidy && git diff --exit-code go.mod go.sum

FUZZTIME ?= 30s
# fuzz: every wire decoder, FUZZTIME each.
fuzz:
	$(GO) test ./gossip -run '^$$' -fuzz FuzzDecodeReport -fuzztime $(FUZZTIME) -fuzzminimizetime 2s
	$(GO) test ./consensus -run '^$$' -fuzz FuzzDecodeCommand -fuzztime $(FUZZTIME)
	$(GO) test ./consensus -run '^$$' -fuzz FuzzConfigApply -fuzztime $(FUZZTIME)
	$(GO) test ./consensus/seed -run '^$$' -fuzz FuzzParseDocument -fuzztime $(FUZZTIME)

integ:
	$(GO) test -race -run Integ $(PKGS)

# bench: the quick cluster benchmark on the two profiles where cluster-wide
# balancing matters, the Go micro-benchmarks and the proxy throughput check;
# everything lands in bench-results/ (git-ignored).
bench: build
	mkdir -p bench-results
	./bin/balancer bench -quick -profile one-slow -out bench-results/one-slow | tee bench-results/one-slow.txt
	./bin/balancer bench -quick -profile long-requests -out bench-results/long-requests | tee bench-results/long-requests.txt
	$(GO) test -run '^$$' -bench . -benchmem ./proxy/... ./breaker/... ./gossip/... | tee bench-results/micro.txt
	$(GO) test -run '^$$' -bench 'ProcWeightChange|ProcFailover' -benchtime 5x ./cmd/balancer | tee bench-results/raft.txt
	./scripts/throughput.sh | tee bench-results/throughput.txt

clean:
	rm -rf bin bench-results
