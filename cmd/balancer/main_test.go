package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

func TestBadInputExitsWithStatus2(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	base := []string{"agent", "-node", "t", "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-data-dir", dir}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"backend without address", append(base, "-backend", "a="), "no address"},
		{"backend without =", append(base, "-backend", "127.0.0.1:80"), "ID=HOST:PORT"},
		{"weight not a number", append(base, "-backend", "a=127.0.0.1:80@heavy"), "not a whole number"},
		{"weight out of range", append(base, "-backend", "a=127.0.0.1:80@100000"), "weight"},
		{"unknown algorithm", append(base, "-algorithm", "fastest"), "-algorithm"},
		{"unknown mode", append(base, "-mode", "udp"), "-mode"},
		{"port in use", []string{"agent", "-node", "t", "-listen", busy.Addr().String(), "-admin", "127.0.0.1:0", "-data-dir", dir}, "address already in use"},
		{"unknown flag", append(base, "-nope"), "flag provided but not defined"},
		{"bad log format", append(base, "-log-format", "xml"), "-log-format"},
		{"missing tls cert", append(base, "-tls-cert", "/nonexistent/n1.pem", "-tls-key", "/nonexistent/n1-key.pem"), "-tls-cert/-tls-key: open /nonexistent/n1.pem"},
		{"raft tls without ca", append(base, "-raft-tls-cert", "n1.pem", "-raft-tls-key", "n1-key.pem"), "-raft-tls-ca"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"no command", nil, "no command"},
		{"status with an argument", []string{"status", "extra"}, "unexpected argument"},
		{"status unknown flag", []string{"status", "-watch"}, "flag provided but not defined"},
		{"demo backend bad fail rate", []string{"demo-backend", "-fail-rate", "2"}, "-fail-rate"},
		{"agent bad backend", []string{"agent", "-backend", "a=1.2.3.4:80@100001"}, "out of range"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), tc.args, &out, &errb)
			code := exitCode(err, &errb)
			if code != 2 {
				t.Fatalf("exit %d, want 2 (err %v)", code, err)
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("stderr %q does not mention %q", errb.String(), tc.want)
			}
			// A bad flag is one line pointing at -h: the whole usage
			// after it would bury the message.
			if strings.HasPrefix(tc.name, "agent") && strings.Count(errb.String(), "\n") > 1 {
				t.Errorf("a bad flag printed %d lines:\n%s", strings.Count(errb.String(), "\n"), errb.String())
			}
		})
	}
}

func TestHelpExitsZeroAndExplainsFlags(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"agent", "-h"}, &out, &errb)
	if code := exitCode(err, &errb); code != 0 {
		t.Fatalf("-h exit %d", code)
	}
	for _, flag := range []string{"-node", "-listen", "-mode", "-admin", "-backend", "-algorithm", "-data-dir", "least-conn-local",
		"-tls-cert", "-tls-ca", "-raft-tls-cert", "-raft-tls-ca", "-max-conns", "-header-timeout", "-keepalive-timeout"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("agent -h does not mention %s", flag)
		}
	}
	if errb.Len() > 0 {
		t.Errorf("-h wrote to stderr (help asked for goes to stdout): %q", errb.String())
	}
}

func TestStatusHelpAndTopUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := exitCode(run(context.Background(), []string{"status", "-h"}, &out, &errb), &errb); code != 0 {
		t.Fatalf("status -h exit %d", code)
	}
	for _, want := range []string{"-admin", "BALANCER_ADMIN", "-token", "-json", "p99"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status -h does not mention %s", want)
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"help"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "balancer status") {
		t.Errorf("the top usage does not list status:\n%s", out.String())
	}
}

func TestAgentRunsAndStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	var logs testutil.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"agent", "-node", "t", "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0",
			"-data-dir", t.TempDir(), "-backend", "a=127.0.0.1:9@2", "-log-format", "json"}, &out, &logs)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), `"msg":"node started"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no start line in the JSON log: %s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent stopped with %v; log: %s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop on cancel")
	}
	if !strings.Contains(logs.String(), `"msg":"node stopped"`) {
		t.Errorf("no stop line in the log: %s", logs.String())
	}
}

func TestParseBackend(t *testing.T) {
	b, err := parseBackend("web-1=10.0.0.5:8080@7")
	if err != nil || b.ID != "web-1" || b.Address != "10.0.0.5:8080" || b.Weight != 7 {
		t.Fatalf("%+v %v", b, err)
	}
	b, err = parseBackend("web-2=[::1]:80")
	if err != nil || b.Weight != 1 || b.Address != "[::1]:80" {
		t.Fatalf("default weight: %+v %v", b, err)
	}
}

func TestCertsCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"certs", "-out", dir, "-nodes", "n1,n2", "-hosts", "127.0.0.1"}, &out, &errb)
	if err != nil {
		t.Fatalf("certs: %v\n%s", err, errb.String())
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "n1.pem", "n1-key.pem", "n2.pem", "n2-key.pem", "client.pem", "client-key.pem"} {
		if !strings.Contains(out.String(), filepath.Join(dir, f)) {
			t.Errorf("output does not list %s:\n%s", f, out.String())
		}
	}
	out.Reset()
	errb.Reset()
	err = run(context.Background(), []string{"certs", "-out", dir, "-nodes", "n3"}, &out, &errb)
	if code := exitCode(err, &errb); code != 2 || !strings.Contains(errb.String(), "-force") {
		t.Fatalf("second run over an existing CA: exit %d, stderr %q; want 2 and a hint at -force", code, errb.String())
	}
	errb.Reset()
	err = run(context.Background(), []string{"certs", "-out", t.TempDir()}, &out, &errb)
	if code := exitCode(err, &errb); code != 2 || !strings.Contains(errb.String(), "-nodes") {
		t.Fatalf("no nodes: exit %d, stderr %q", code, errb.String())
	}
}
