package gateway

import (
	"testing"
	"time"
)

func BenchmarkSpoolAppend(b *testing.B) {
	s, err := OpenSpool(SpoolConfig{Dir: b.TempDir(), MaxBytes: 8 << 30, SyncInterval: 100 * time.Millisecond}, quietLog)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := make([]byte, 600)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Append(rec); err != nil {
			b.Fatal(err)
		}
	}
}
