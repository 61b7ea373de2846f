// Package e2e runs the balancer the way it is deployed: the FROM scratch
// image of deploy/Dockerfile, three nodes and three demo backends from
// deploy/compose.yaml, and faults injected with docker itself (kill, stop,
// network disconnect). It owns only tests; it holds no product code and
// nothing imports it.
//
// The tests need a docker engine and docker compose (the plugin or
// docker-compose v1) and skip without them; cmd/balancer's process-based
// tests cover the same faults without docker.
package e2e
