package backend

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// nopWriter is a ResponseWriter that keeps nothing, to measure the handler
// alone.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

func BenchmarkHandler(b *testing.B) {
	for _, q := range []string{"", "sleep=0&size=4096"} {
		b.Run("q="+q, func(b *testing.B) {
			cfg := testConfig()
			cfg.Workers = 64
			s, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			req := httptest.NewRequest(http.MethodGet, "/?"+q, nil)
			w := &nopWriter{h: make(http.Header)}
			b.ReportAllocs()
			for b.Loop() {
				s.serveHTTP(w, req)
			}
		})
	}
}

func TestHandlerAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	cfg := testConfig()
	cfg.Workers = 4
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	req := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(context.Background())
	w := &nopWriter{h: make(http.Header)}
	if n := testing.AllocsPerRun(1000, func() { s.serveHTTP(w, req) }); n > 0 {
		t.Errorf("handler allocates %v times per request, want 0", n)
	}
}

// BenchmarkLoopback measures a full request over a keep-alive loopback
// connection, the way the proxy benchmark will see the backend.
func BenchmarkLoopback(b *testing.B) {
	cfg := testConfig()
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	url := "http://" + s.Addr() + "/"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
