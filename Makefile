# ocimount — see README.md.
GO      ?= go
BIN     := bin/ocimount
SNAPBIN := bin/ocimount-snapshotter
DEMO    ?= /tmp/ocimount-demo
FUZZTIME ?= 20s
# urfave_cli_no_docs drops the CLI library's man/markdown generators (and
# their markdown package, whose init costs every process start ~1 ms).
TAGS    := urfave_cli_no_docs

.PHONY: build demo test vet fuzz bench clean deps

# The containerd snapshotter is a binary of its own (cmd/ocimount-snapshotter):
# gRPC and containerd's packages stay out of the mount command.
build:
	$(GO) build -tags $(TAGS) -o $(BIN) ./cmd/ocimount
	$(GO) build -o $(SNAPBIN) ./cmd/ocimount-snapshotter

deps:
	scripts/deps.sh

# Build, make a small multi-layer demo image (gzip, zstd and plain tar
# layers with whiteouts, an opaque dir, hardlinks and xattrs), mount it,
# show it, unmount.
demo: build
	scripts/demo.sh $(BIN) $(DEMO)

# The test command (CI runs this). Integration tests mount through FUSE and
# need root, /dev/fuse and umoci; set OCIMOUNT_INTEGRATION=1 to make their
# absence a failure instead of a skip.
test: deps vet
	$(GO) test -race -count=1 -timeout 20m ./...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

# Every fuzz target in the tree, $(FUZZTIME) each: scripts/fuzz.sh finds
# them (func Fuzz* in *_test.go), so a new one runs without an edit here.
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

clean:
	rm -rf bin
