package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Pointed at a traffic port, the CLI gets a backend's 200 answer. It must
// say that the address is not an admin API, not quote the JSON parser.
func TestClientNamesAnAnswerThatIsNotTheAdminAPI(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("slow backend b2\n"))
	}))
	t.Cleanup(srv.Close)
	_, err := NewClient(srv.URL, "").Members(testCtx(t))
	if err == nil {
		t.Fatal("a plain-text answer decoded as members")
	}
	for _, want := range []string{"not a balancer admin API", `"text/plain"`, `"slow backend b2\n"`, "-admin address"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
