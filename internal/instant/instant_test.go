package instant

import (
	"testing"
	"time"
)

func TestMinMax(t *testing.T) {
	a := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	b := a.Add(time.Hour)
	if Min(a, b) != a || Min(b, a) != a || Max(a, b) != b || Max(b, a) != b {
		t.Errorf("Min/Max of %s and %s: %s %s %s %s", a, b, Min(a, b), Min(b, a), Max(a, b), Max(b, a))
	}
}
