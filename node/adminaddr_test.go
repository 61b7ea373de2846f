package node

import "testing"

// Peers' admin addresses come from gossip and end up dialled by forwarding
// and linked from the status page: only the forms nodes advertise pass.
func TestAdminAddrPassesOnlyWhatNodesAdvertise(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9090":                         "127.0.0.1:9090",
		"n1.internal:9090":                       "n1.internal:9090",
		"[::1]:9090":                             "[::1]:9090",
		"https://10.0.0.1:9090":                  "https://10.0.0.1:9090",
		"http://n2:9090":                         "http://n2:9090",
		"javascript://%0aalert(document.domain)": "",
		"javascript:alert(1)":                    "",
		"https://evil.example/path:1":            "",
		"https://user@evil:9090":                 "",
		"n1:http":                                "",
		"n1:0":                                   "",
		"n1":                                     "",
		"":                                       "",
	} {
		if got := adminAddr(in); got != want {
			t.Errorf("adminAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
