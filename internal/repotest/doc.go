// Package repotest holds tests of the repository itself rather than of
// any package: that the build scripts and the Makefile agree with the
// code, so that what `make fuzz` runs cannot drift from what the tree
// holds. It has no code of its own; `go test ./...` runs its tests.
package repotest
