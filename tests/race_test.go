//go:build race

package tests

// raceEnabled: this test binary runs with the race detector, and so do
// the servers it builds for its tests (ocimount-snapshotter).
const raceEnabled = true
