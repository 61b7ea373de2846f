package breaker

import "testing"

func TestScratchMixedAt40(t *testing.T) {
	cfg := testConfig()
	cfg.ErrorPercent = 40
	s, _ := startSet(t, "n1", cfg)
	mixed := s.Circuit("mixed")
	for range 30 {
		for i := range 10 {
			mixed.Allow()
			mixed.Done(false, i%5 >= 2)
		}
		eventually(t, "flush", func() bool { return mixed.successes.Load()+mixed.failures.Load() == 0 })
	}
	t.Log(mixed.cb.IsOpen(), mixed.State())
}
