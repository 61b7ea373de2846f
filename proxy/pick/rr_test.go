package pick

import (
	"slices"
	"testing"
)

func TestRoundRobinSequence(t *testing.T) {
	tests := []struct {
		name string
		c    []Candidate
		skip Skip
		want []int
	}{
		{"plain", cands(1, 1, 1), Skip{}, []int{0, 1, 2, 0, 1, 2}},
		{"weights ignored", cands(9, 1, 3), Skip{}, []int{0, 1, 2, 0, 1, 2}},
		// The successor of a down backend does not inherit its turns.
		{"down", down(cands(1, 1, 1, 1), 1), Skip{}, []int{0, 2, 3, 0, 2, 3}},
		{"drained", cands(1, 0, 1, 0), Skip{}, []int{0, 2, 0, 2}},
		// A skipped candidate's turn goes to the next one.
		{"skip", cands(1, 1, 1), skipOf(1), []int{0, 2, 2, 0, 2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustNew(t, RoundRobin, tt.c, new(State))
			var got []int
			for range tt.want {
				got = append(got, p.Pick(tt.c, nil, tt.skip))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("picks %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRoundRobinRebuild checks that a rebuild with the same State carries
// on with the rotation instead of starting over at backend 0.
func TestRoundRobinRebuild(t *testing.T) {
	var st State
	c := cands(1, 1, 1)
	p := mustNew(t, RoundRobin, c, &st)
	got := []int{p.Pick(c, nil, Skip{}), p.Pick(c, nil, Skip{})}

	c2 := cands(1, 1, 1) // same backends, new loads/breaker view
	p = mustNew(t, RoundRobin, c2, &st)
	got = append(got, p.Pick(c2, nil, Skip{}), p.Pick(c2, nil, Skip{}))

	if want := []int{0, 1, 2, 0}; !slices.Equal(got, want) {
		t.Errorf("picks %v, want %v", got, want)
	}

	// A fresh State restarts, which is what the shared one prevents.
	if i := mustNew(t, RoundRobin, c2, new(State)).Pick(c2, nil, Skip{}); i != 0 {
		t.Errorf("fresh State: pick %d, want 0", i)
	}
}
