// Package cluster holds the multi-process fault tests (DESIGN.md, Tests,
// item 5): a harness that builds the agenthost binary once and starts real
// processes on loopback — three control servers, two node agents with the
// process driver (stand-in runtimes: the test binary itself), an edge proxy —
// and scenarios that break them on purpose (kill -9, SIGSTOP, restarts) and
// check that nothing acknowledged is lost.
//
// Everything is in _test.go files: nothing imports this package. The short
// scenarios run in `go test ./...`; `make test-faults` runs the longer ones
// (the -faults flag).
package cluster
