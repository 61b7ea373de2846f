// Package testutil holds the helpers that the tests of several packages
// share: a bounded poll (Eventually), a loopback address nothing listens on
// (FreeAddr), a parsed Prometheus /metrics page (Scrape, Sample) and a
// buffer that a logger and the test may use at once (SyncBuffer), and the
// serial of a certificate file (CertSerial).
//
// It serves tests only. Import it from _test.go files, never from code that
// ships in the balancer (make lint checks this). Its helpers fail the test
// with t.Fatal, so call them from the test's own goroutine.
package testutil
