package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWrongMethodIs405WithAllow(t *testing.T) {
	h := NewHandler(Sources{Node: "n1", Metrics: http.NotFoundHandler()})
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodPost, "/v1/backends/x/weight", 405, "PUT, DELETE"},
		{http.MethodPost, "/v1/members", 405, "GET, HEAD"},
		{http.MethodGet, "/v1/backends/x", 405, "PUT, DELETE"},
		{http.MethodGet, "/v1/nothing", 404, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.status || rec.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want %d Allow %q (%s)", tc.method, tc.path, rec.Code, rec.Header().Get("Allow"), tc.status, tc.allow, rec.Body)
		}
		if !strings.Contains(rec.Header().Get("Content-Type"), "json") {
			t.Errorf("%s %s: answer is not JSON", tc.method, tc.path)
		}
	}
}
