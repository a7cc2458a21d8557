package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func openSpool(t *testing.T, cfg SpoolConfig) *Spool {
	t.Helper()
	s, err := OpenSpool(cfg, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func appendN(t *testing.T, s *Spool, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := s.Append([]byte(fmt.Sprintf("record-%05d", i))); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

// drain reads everything available, acking as it goes, and returns the records.
func drain(t *testing.T, s *Spool, ack bool) []string {
	t.Helper()
	var out []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		recs, pos, err := s.Next(ctx, 7)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			out = append(out, string(r))
		}
		if ack {
			if err := s.Ack(pos); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func want(from, n int) []string {
	var out []string
	for i := from; i < from+n; i++ {
		out = append(out, fmt.Sprintf("record-%05d", i))
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSpoolReplaysWhatWasNotAcked(t *testing.T) {
	dir := t.TempDir()
	cfg := SpoolConfig{Dir: dir, SegmentBytes: 200, SyncInterval: 10 * time.Millisecond}
	s := openSpool(t, cfg)
	appendN(t, s, 0, 50)
	if got := drain(t, s, false); !equal(got, want(0, 50)) {
		t.Fatalf("first read: %d records, want 50 in order", len(got))
	}
	// The process dies without acknowledging: a new process replays everything, in order.
	s.Close()
	s = openSpool(t, cfg)
	appendN(t, s, 50, 10)
	if got := drain(t, s, true); !equal(got, want(0, 60)) {
		t.Fatalf("after restart: %v, want records 0..59 in order", got)
	}
	// Acknowledged records are gone for good, and so are their segment files.
	s.Close()
	s = openSpool(t, cfg)
	if got := drain(t, s, true); len(got) != 0 {
		t.Fatalf("after ack and restart: %d records replayed, want 0", len(got))
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) > 2 {
		t.Errorf("%d segment files left after everything was shipped", len(segs))
	}
}

func TestSpoolSkipsATornTail(t *testing.T) {
	dir := t.TempDir()
	cfg := SpoolConfig{Dir: dir, SyncInterval: 10 * time.Millisecond}
	s := openSpool(t, cfg)
	appendN(t, s, 0, 5)
	s.Close()
	// A crash mid-write leaves half a frame at the end of the segment.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	f, err := os.OpenFile(segs[len(segs)-1], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{200, 0, 0, 0, 1, 2, 3, 4, 'x'})
	f.Close()

	s = openSpool(t, cfg)
	appendN(t, s, 5, 5)
	if got := drain(t, s, true); !equal(got, want(0, 10)) {
		t.Fatalf("got %v, want the 10 whole records around the torn frame", got)
	}
}

func TestSpoolDetectsCorruption(t *testing.T) {
	dir := t.TempDir()
	cfg := SpoolConfig{Dir: dir, SyncInterval: 10 * time.Millisecond}
	s := openSpool(t, cfg)
	appendN(t, s, 0, 3)
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	b, _ := os.ReadFile(segs[0])
	b[len(b)-1] ^= 0xff // flip a bit in the last record's payload
	os.WriteFile(segs[0], b, 0o640)

	s = openSpool(t, cfg)
	if got := drain(t, s, true); !equal(got, want(0, 2)) {
		t.Fatalf("got %v, want the 2 records before the damaged one and not the damaged one", got)
	}
}

func TestSpoolRefusesWhenFullAndRecovers(t *testing.T) {
	s := openSpool(t, SpoolConfig{Dir: t.TempDir(), MaxBytes: 20 * 1024, SyncInterval: 10 * time.Millisecond})
	n := 0
	for ; n < 10000; n++ {
		err := s.Append([]byte(fmt.Sprintf("record-%05d", n)))
		if errors.Is(err, ErrSpoolFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n == 0 || n == 10000 {
		t.Fatalf("spool took %d records before refusing; want a bound below 10000", n)
	}
	if got := drain(t, s, true); !equal(got, want(0, n)) {
		t.Fatalf("drained %d records, want the %d accepted ones", len(got), n)
	}
	if err := s.Append([]byte("after drain")); err != nil {
		t.Fatalf("append after the spool drained: %v", err)
	}
}

func TestSpoolAppendAfterCloseFails(t *testing.T) {
	s := openSpool(t, SpoolConfig{Dir: t.TempDir()})
	s.Close()
	if err := s.Append([]byte("x")); !errors.Is(err, ErrSpoolClosed) {
		t.Fatalf("append after close: %v, want ErrSpoolClosed", err)
	}
}

func TestSpoolIsExclusiveToOneProcess(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, SpoolConfig{Dir: dir})
	if _, err := OpenSpool(SpoolConfig{Dir: dir}, quietLog); err == nil {
		t.Fatal("a second spool opened on a directory in use")
	}
	s.Close()
	again, err := OpenSpool(SpoolConfig{Dir: dir}, quietLog)
	if err != nil {
		t.Fatalf("reopen after close: %v", err)
	}
	again.Close()
}
