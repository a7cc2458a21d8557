// Package instant orders time.Time values, which Go's min and max do not take.
package instant

import "time"

// Min is the earlier of a and b (a when they are the same instant).
func Min(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// Max is the later of a and b (a when they are the same instant).
func Max(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
