package seed

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func checks(statuses ...string) api.HealthChecks {
	out := api.HealthChecks{{CheckID: "serfHealth", Status: api.HealthPassing}}
	for i, s := range statuses {
		out = append(out, &api.HealthCheck{CheckID: "service:" + string(rune('a'+i)), Status: s})
	}
	return out
}

func entry(node, nodeAddr, id, addr string, port int, w api.AgentWeights, chks api.HealthChecks) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Node: node, Address: nodeAddr},
		Service: &api.AgentService{ID: id, Service: "web", Address: addr, Port: port, Weights: w},
		Checks:  chks,
	}
}

func TestFromEntries(t *testing.T) {
	w := api.AgentWeights{Passing: 10, Warning: 3}
	maint := append(checks(api.HealthPassing), &api.HealthCheck{CheckID: api.ServiceMaintPrefix + "a", Status: api.HealthCritical})
	long := strings.Repeat("x", 70)
	tests := []struct {
		name    string
		entries []*api.ServiceEntry
		want    []Backend
		skipped int
	}{
		{"passing uses Passing weight", []*api.ServiceEntry{entry("n1", "10.0.0.9", "a", "10.0.0.1", 80, w, checks(api.HealthPassing))},
			[]Backend{{"a", "10.0.0.1:80", 10}}, 0},
		{"warning uses Warning weight", []*api.ServiceEntry{entry("n1", "10.0.0.9", "a", "10.0.0.1", 80, w, checks(api.HealthPassing, api.HealthWarning))},
			[]Backend{{"a", "10.0.0.1:80", 3}}, 0},
		{"critical excluded", []*api.ServiceEntry{entry("n1", "10.0.0.9", "a", "10.0.0.1", 80, w, checks(api.HealthWarning, api.HealthCritical))},
			nil, 0},
		{"maintenance excluded", []*api.ServiceEntry{entry("n1", "10.0.0.9", "a", "10.0.0.1", 80, w, maint)},
			nil, 0},
		{"unknown status excluded", []*api.ServiceEntry{entry("n1", "10.0.0.9", "a", "10.0.0.1", 80, w, checks("bogus"))},
			nil, 0},
		{"node check critical excluded", []*api.ServiceEntry{entry("n1", "10.0.0.9", "a", "10.0.0.1", 80, w,
			api.HealthChecks{{CheckID: "serfHealth", Status: api.HealthCritical}, {CheckID: "service:a", Status: api.HealthPassing}})},
			nil, 0},
		{"node address fallback", []*api.ServiceEntry{entry("n1", "10.0.0.9", "a", "", 80, w, checks())},
			[]Backend{{"a", "10.0.0.9:80", 10}}, 0},
		{"IPv6 service address", []*api.ServiceEntry{entry("n1", "10.0.0.9", "a", "2001:db8::1", 443, w, checks())},
			[]Backend{{"a", "[2001:db8::1]:443", 10}}, 0},
		{"IPv6 node address already bracketed", []*api.ServiceEntry{entry("n1", "[::1]", "a", "", 443, w, checks())},
			[]Backend{{"a", "[::1]:443", 10}}, 0},
		{"weights clamped", []*api.ServiceEntry{
			entry("n1", "h", "big", "", 1, api.AgentWeights{Passing: 1 << 40}, checks()),
			entry("n1", "h", "neg", "", 2, api.AgentWeights{Passing: -5}, checks()),
			entry("n1", "h", "zero", "", 3, api.AgentWeights{Passing: 0, Warning: 9}, checks())},
			[]Backend{{"big", "h:1", MaxWeight}, {"neg", "h:2", 0}, {"zero", "h:3", 0}}, 0},
		{"no address or bad port skipped", []*api.ServiceEntry{
			entry("n1", "", "a", "", 80, w, checks()),
			entry("n1", "h", "b", "", 0, w, checks()),
			entry("n1", "h", "c", "", 70000, w, checks()),
			{Node: &api.Node{Node: "n1"}}, nil},
			nil, 5},
		{"ID sanitised", []*api.ServiceEntry{entry("n1", "h", "web:8080/v1", "", 80, w, checks())},
			[]Backend{{"web_8080_v1", "h:80", 10}}, 0},
		{"same ID on two nodes qualified by node", []*api.ServiceEntry{
			entry("node-b", "10.0.0.2", "web", "", 80, w, checks()),
			entry("node-a", "10.0.0.1", "web", "", 80, w, checks()),
			entry("node-a", "10.0.0.1", "api", "", 81, w, checks())},
			[]Backend{{"api", "10.0.0.1:81", 10}, {"node-a.web", "10.0.0.1:80", 10}, {"node-b.web", "10.0.0.2:80", 10}}, 0},
		{"empty ID falls back to the service name", []*api.ServiceEntry{{
			Node: &api.Node{Node: "n1", Address: "h"}, Service: &api.AgentService{Service: "web", Port: 80, Weights: w}, Checks: checks()}},
			[]Backend{{"web", "h:80", 10}}, 0},
		{"same node and ID twice gets a suffix", []*api.ServiceEntry{
			entry("n1", "h", "a", "h1", 80, w, checks()),
			entry("n1", "h", "a", "h2", 80, w, checks())},
			[]Backend{{"n1.a", "h1:80", 10}, {"n1.a-2", "h2:80", 10}}, 0},
		{"long IDs stay distinct", []*api.ServiceEntry{
			entry("n1", "h", long+"1", "", 80, w, checks()),
			entry("n1", "h", long+"2", "", 81, w, checks())},
			[]Backend{{SanitizeID(long + "1"), "h:80", 10}, {SanitizeID(long + "2"), "h:81", 10}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, skipped := FromEntries(tc.entries)
			if !slices.Equal(got, tc.want) || got == nil {
				t.Errorf("backends = %#v, want %v (never nil)", got, tc.want)
			}
			if len(skipped) != tc.skipped {
				t.Errorf("skipped = %q, want %d", skipped, tc.skipped)
			}
			for _, b := range got {
				if !idPattern.MatchString(b.ID) {
					t.Errorf("ID %q outside the backend ID set", b.ID)
				}
			}
		})
	}
}

func TestSanitizeID(t *testing.T) {
	long := strings.Repeat("a", 100)
	tests := []struct{ in, want string }{
		{"web-1", "web-1"},
		{"Web.1_x", "Web.1_x"},
		{"web 1/é", "web_1__"},
		{"_sidecar", "s_sidecar"},
		{"-x", "s-x"},
		{"", "s"},
		{strings.Repeat("b", 64), strings.Repeat("b", 64)},
	}
	for _, tc := range tests {
		if got := SanitizeID(tc.in); got != tc.want {
			t.Errorf("SanitizeID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	a, b := SanitizeID(long+"1"), SanitizeID(long+"2")
	if len(a) != MaxIDLen || a == b || !idPattern.MatchString(a) || !idPattern.MatchString(b) {
		t.Errorf("long IDs: %q %q", a, b)
	}
}

func TestParseDocument(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []Backend
		err  string // substring; "" means valid
	}{
		{"valid", `{"backends":[{"id":"b","address":"10.0.0.2:80","weight":5},{"id":"a","address":"[2001:db8::1]:8080","weight":0}]}`,
			[]Backend{{"a", "[2001:db8::1]:8080", 0}, {"b", "10.0.0.2:80", 5}}, ""},
		{"weight defaults to 1", `{"backends":[{"id":"a","address":"h:1"}]}`, []Backend{{"a", "h:1", 1}}, ""},
		{"empty set", ` {"backends": []} `, []Backend{}, ""},
		{"max weight", `{"backends":[{"id":"a","address":"h:65535","weight":10000}]}`, []Backend{{"a", "h:65535", 10000}}, ""},
		{"empty value", "  ", nil, "empty value"},
		{"not JSON", `backends: []`, nil, "invalid character"},
		{"not an object", `[]`, nil, "cannot unmarshal"},
		{"null", `null`, nil, `"backends" is required`},
		{"backends missing", `{}`, nil, `"backends" is required`},
		{"backends null", `{"backends":null}`, nil, `"backends" is required`},
		{"backends not an array", `{"backends":{}}`, nil, "cannot unmarshal"},
		{"unknown top-level field", `{"backends":[],"extra":1}`, nil, `unknown field "extra"`},
		{"unknown entry field", `{"backends":[{"id":"a","address":"h:1","drain":true}]}`, nil, `unknown field "drain"`},
		{"trailing data", `{"backends":[]} {}`, nil, "data after"},
		{"id missing", `{"backends":[{"address":"h:1"}]}`, nil, "backends[0].id: required"},
		{"id bad chars", `{"backends":[{"id":"a b","address":"h:1"}]}`, nil, "backends[0].id"},
		{"id leading dot", `{"backends":[{"id":".a","address":"h:1"}]}`, nil, "backends[0].id"},
		{"id too long", `{"backends":[{"id":"` + strings.Repeat("a", 65) + `","address":"h:1"}]}`, nil, "backends[0].id"},
		{"id duplicate", `{"backends":[{"id":"a","address":"h:1"},{"id":"a","address":"h:2"}]}`, nil, "backends[1].id: \"a\" already used by backends[0]"},
		{"id not a string", `{"backends":[{"id":5,"address":"h:1"}]}`, nil, "cannot unmarshal"},
		{"address missing", `{"backends":[{"id":"a"}]}`, nil, "backends[0].address: required"},
		{"address without port", `{"backends":[{"id":"a","address":"10.0.0.1"}]}`, nil, "want host:port"},
		{"address without host", `{"backends":[{"id":"a","address":":80"}]}`, nil, "a host is required"},
		{"address port 0", `{"backends":[{"id":"a","address":"h:0"}]}`, nil, "numeric port"},
		{"address port name", `{"backends":[{"id":"a","address":"h:http"}]}`, nil, "numeric port"},
		{"address port signed", `{"backends":[{"id":"a","address":"h:+80"}]}`, nil, "numeric port"},
		{"address IPv6 unbracketed", `{"backends":[{"id":"a","address":"::1:80"}]}`, nil, "want host:port"},
		{"weight negative", `{"backends":[{"id":"a","address":"h:1","weight":-1}]}`, nil, "-1 out of range 0..10000"},
		{"weight too big", `{"backends":[{"id":"a","address":"h:1","weight":1e9}]}`, nil, "whole number"},
		{"weight above max", `{"backends":[{"id":"a","address":"h:1","weight":10001}]}`, nil, "10001 out of range"},
		{"weight fraction", `{"backends":[{"id":"a","address":"h:1","weight":1.5}]}`, nil, "whole number"},
		{"weight string", `{"backends":[{"id":"a","address":"h:1","weight":"5"}]}`, nil, "want a number"},
		{"weight null", `{"backends":[{"id":"a","address":"h:1","weight":null}]}`, nil, "want a number"},
		{"weight huge", `{"backends":[{"id":"a","address":"h:1","weight":123456789012345678901234567890}]}`, nil, "whole number"},
		{"all problems listed", `{"backends":[{"id":"a","address":"x","weight":-1},{"address":"h:1"}]}`, nil,
			"backends[0].address: \"x\": want host:port; backends[0].weight: -1 out of range 0..10000; backends[1].id: required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDocument([]byte(tc.doc))
			if tc.err == "" {
				if err != nil || !slices.Equal(got, tc.want) || got == nil {
					t.Fatalf("= %v, %v; want %v", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrInvalidDocument) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v; want ErrInvalidDocument mentioning %q", err, tc.err)
			}
			if got != nil {
				t.Fatalf("got %v with an error", got)
			}
		})
	}

	var many strings.Builder
	many.WriteString(`{"backends":[`)
	for i := range 15 {
		if i > 0 {
			many.WriteString(",")
		}
		many.WriteString(`{"address":"h:1"}`)
	}
	many.WriteString(`]}`)
	if _, err := ParseDocument([]byte(many.String())); err == nil || !strings.HasSuffix(err.Error(), "and 5 more") {
		t.Errorf("15 problems: %v; want 10 listed and 5 more", err)
	}
}

func FuzzParseDocument(f *testing.F) {
	f.Add([]byte(`{"backends":[{"id":"a","address":"10.0.0.1:80","weight":5}]}`))
	f.Add([]byte(`{"backends":[{"id":"a","address":"[::1]:80"},{"id":"b","address":"h:1","weight":0}]}`))
	f.Add([]byte(`{"backends":null}`))
	f.Add([]byte(`{"backends":[{"weight":1e9}]} x`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseDocument(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidDocument) || got != nil {
				t.Fatalf("error %v with result %v", err, got)
			}
			return
		}
		seen := map[string]bool{}
		for _, b := range got {
			if !idPattern.MatchString(b.ID) || seen[b.ID] || b.Weight < 0 || b.Weight > MaxWeight || checkAddress(b.Address) != nil {
				t.Fatalf("accepted a bad backend %+v", b)
			}
			seen[b.ID] = true
		}
	})
}

func TestConfig(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"wait zero", func(c *Config) { c.WaitTime = 0 }, "wait time"},
		{"wait above Consul's cap", func(c *Config) { c.WaitTime = 11 * time.Minute }, "wait time"},
		{"min interval zero", func(c *Config) { c.MinInterval = 0 }, "min interval"},
		{"backoff min zero", func(c *Config) { c.BackoffMin = 0 }, "backoff min"},
		{"backoff max below min", func(c *Config) { c.BackoffMax = time.Millisecond }, "backoff max"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
			if err := c.withDefaults().Validate(); err != nil {
				t.Fatalf("withDefaults still invalid: %v", err)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	cfg := Config{BackoffMin: time.Second, BackoffMax: 10 * time.Second}
	want := []time.Duration{1, 2, 4, 8, 10, 10}
	for i, w := range want {
		if got := backoff(cfg, i+1); got != w*time.Second {
			t.Errorf("failure %d: %v, want %v", i+1, got, w*time.Second)
		}
	}
	if got := backoff(cfg, 1000); got != 10*time.Second {
		t.Errorf("failure 1000: %v (overflow?)", got)
	}
}
