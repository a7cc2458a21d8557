package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The spool is the gateway's write-ahead log of usage events: every event is appended
// here before its completion is returned, and the producer ships events from here to
// Kafka, oldest first, advancing a cursor only after Kafka acknowledged them.
//
// Durability promise: Append returns after the record is in the operating system (one
// write(2) of the whole record), so it survives the gateway process dying at any point,
// SIGKILL included. It reaches the disk itself at the next fsync, at most SyncInterval
// later (negative: fsync before Append returns), which bounds what a machine crash can lose.
//
// On disk: segment files NNNNNNNNNNNNNNNNNNNN.seg of frames
//
//	uint32 length | uint32 CRC-32C of payload | payload
//
// and a cursor file "<segment> <offset>" naming the first frame not yet shipped. A frame
// that fails its checksum ends its segment (a torn write at a crash); the spool logs it
// and moves on to the next segment. Replays after a crash can ship a frame twice; the
// event_id dedup downstream absorbs that.

// SpoolConfig configures the spool.
type SpoolConfig struct {
	Dir          string        // directory of segment files; one per gateway process
	SegmentBytes int64         // a segment is closed at this size; default 64 MiB
	MaxBytes     int64         // spool size at which Append refuses events; default 1 GiB
	SyncInterval time.Duration // fsync period; negative: fsync on every Append; default 100ms
}

// Validate names the first bad field.
func (c SpoolConfig) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("spool: Dir (VENNA_SPOOL_DIR) is empty")
	case c.SegmentBytes < 0 || c.MaxBytes < 0:
		return errors.New("spool: SegmentBytes and MaxBytes must not be negative")
	}
	return nil
}

// ErrSpoolFull is returned by Append when the spool holds MaxBytes of unshipped events.
var ErrSpoolFull = errors.New("usage spool full")

// ErrSpoolClosed is returned by Append after Close.
var ErrSpoolClosed = errors.New("usage spool closed")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const frameHeader = 8

// Position is a place in the spool: a segment and a byte offset in it.
type Position struct {
	Segment uint64
	Offset  int64
}

// Spool is safe for concurrent Appends and one reader (Next/Ack).
type Spool struct {
	cfg SpoolConfig
	log *slog.Logger

	mu        sync.Mutex
	cur       *os.File
	curID     uint64
	curSize   int64
	sizes     map[uint64]int64 // bytes of every segment not yet deleted
	total     int64
	full      bool // logged that the spool is full, until it drains
	closed    bool
	noAppends bool // Appends refused, files still open (a producer draining)
	dirty     bool // written since the last fsync
	appended  chan struct{}

	// reader state, used only by the shipping goroutine
	rd     *os.File
	rdBuf  *bufio.Reader
	rdPos  Position
	acked  Position // guarded by mu
	handed Position // end of the last records Next returned; guarded by mu
	stopFn context.CancelFunc
	done   chan struct{}
	lock   *os.File // holds the directory's flock while open
}

func segName(id uint64) string { return fmt.Sprintf("%020d.seg", id) }

// OpenSpool opens (or creates) the spool in cfg.Dir. Events left by an earlier process
// are kept and shipped first.
func OpenSpool(cfg SpoolConfig, log *slog.Logger) (*Spool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = 64 << 20
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 1 << 30
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = 100 * time.Millisecond
	}
	// Shipped bytes are freed a whole segment at a time: keep segments small beside the bound.
	cfg.SegmentBytes = max(min(cfg.SegmentBytes, cfg.MaxBytes/4), 4096)
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("create spool dir: %w", err)
	}
	// One process per spool: two writers would interleave segments and race on the cursor.
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open spool lock: %w", err)
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool %s is in use by another process (each gateway needs its own VENNA_SPOOL_DIR): %w", cfg.Dir, err)
	}
	s := &Spool{cfg: cfg, log: log, sizes: map[uint64]int64{}, appended: make(chan struct{}, 1), done: make(chan struct{}), lock: lock}
	ids, err := s.segments()
	if err != nil {
		lock.Close()
		return nil, err
	}
	for _, id := range ids {
		fi, err := os.Stat(filepath.Join(cfg.Dir, segName(id)))
		if err != nil {
			return nil, fmt.Errorf("stat spool segment: %w", err)
		}
		s.sizes[id] = fi.Size()
		s.total += fi.Size()
	}
	s.acked, err = s.readCursor()
	if err != nil {
		return nil, err
	}
	if len(ids) > 0 && s.acked.Segment < ids[0] {
		s.acked = Position{Segment: ids[0]}
	}
	// Always write into a fresh segment: an old tail may end in a torn frame.
	next := uint64(1)
	if len(ids) > 0 {
		next = ids[len(ids)-1] + 1
	}
	if err := s.rotateLocked(next); err != nil {
		return nil, err
	}
	if s.acked.Segment == 0 {
		s.acked = Position{Segment: next}
	}
	s.rdPos, s.handed = s.acked, s.acked
	ctx, cancel := context.WithCancel(context.Background())
	s.stopFn = cancel
	go s.syncLoop(ctx)
	return s, nil
}

func (s *Spool) segments() ([]uint64, error) {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("list spool: %w", err)
	}
	var ids []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

func (s *Spool) readCursor() (Position, error) {
	b, err := os.ReadFile(filepath.Join(s.cfg.Dir, "cursor"))
	if errors.Is(err, os.ErrNotExist) {
		return Position{}, nil
	}
	if err != nil {
		return Position{}, fmt.Errorf("read spool cursor: %w", err)
	}
	var p Position
	if _, err := fmt.Sscanf(string(b), "%d %d", &p.Segment, &p.Offset); err != nil {
		s.log.Warn("spool cursor unreadable; replaying the whole spool", "err", err)
		return Position{}, nil
	}
	return p, nil
}

func (s *Spool) rotateLocked(id uint64) error {
	if s.cur != nil {
		if err := s.cur.Sync(); err != nil {
			return fmt.Errorf("sync spool segment: %w", err)
		}
		s.cur.Close()
	}
	f, err := os.OpenFile(filepath.Join(s.cfg.Dir, segName(id)), os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("create spool segment: %w", err)
	}
	s.cur, s.curID, s.curSize = f, id, 0
	s.sizes[id] = 0
	return nil
}

// Append writes one record. It fails with ErrSpoolFull when MaxBytes of unshipped events
// are waiting (the caller must not acknowledge what it cannot record).
func (s *Spool) Append(payload []byte) error {
	frame := make([]byte, frameHeader+len(payload))
	copy(frame[frameHeader:], payload)
	return s.appendFrame(frame)
}

// appendFrame writes frame, whose first frameHeader bytes are left for the header and
// the rest is the payload: callers that build the payload in place save a copy.
func (s *Spool) appendFrame(frame []byte) error {
	payload := frame[frameHeader:]
	binary.LittleEndian.PutUint32(frame[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(frame[4:8], crc32.Checksum(payload, crcTable))

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.noAppends {
		return ErrSpoolClosed
	}
	if s.total+int64(len(frame)) > s.cfg.MaxBytes {
		if !s.full {
			s.full = true
			s.log.Error("usage spool full: refusing completions until Kafka drains it", "bytes", s.total, "max_bytes", s.cfg.MaxBytes, "dir", s.cfg.Dir)
		}
		return ErrSpoolFull
	}
	if s.curSize > 0 && s.curSize+int64(len(frame)) > s.cfg.SegmentBytes {
		if err := s.rotateLocked(s.curID + 1); err != nil {
			return err
		}
	}
	if _, err := s.cur.Write(frame); err != nil {
		// A short write leaves a torn frame: start a new segment so later frames stay readable.
		rerr := s.rotateLocked(s.curID + 1)
		return errors.Join(fmt.Errorf("append to spool: %w", err), rerr)
	}
	s.curSize += int64(len(frame))
	s.sizes[s.curID] = s.curSize
	s.total += int64(len(frame))
	if s.cfg.SyncInterval < 0 {
		if err := s.cur.Sync(); err != nil {
			return fmt.Errorf("sync spool: %w", err)
		}
	} else {
		s.dirty = true
	}
	select {
	case s.appended <- struct{}{}:
	default:
	}
	return nil
}

func (s *Spool) syncLoop(ctx context.Context) {
	defer close(s.done)
	if s.cfg.SyncInterval < 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(s.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// fsync outside the lock: Appends must not wait for the disk. A segment rotated
			// meanwhile was synced by rotateLocked, so ErrClosed here is harmless.
			s.mu.Lock()
			f := s.cur
			dirty := s.dirty && f != nil
			s.dirty = false
			s.mu.Unlock()
			if dirty {
				if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
					s.log.Error("fsync usage spool", "err", err)
				}
			}
		}
	}
}

// Bytes reports the size of the spool's segments (shipped ones are deleted on Ack).
func (s *Spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Pending reports whether records exist beyond the acknowledged position.
func (s *Spool) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked.Segment < s.curID || s.acked.Offset < s.curSize
}

// Next returns up to max records from the read position, waiting until at least one
// exists or ctx ends. The returned position is where the records end: Ack it once they
// are shipped. Next is for the single shipping goroutine.
func (s *Spool) Next(ctx context.Context, max int) ([][]byte, Position, error) {
	var out [][]byte
	for len(out) == 0 {
		recs, err := s.readAvailable(max)
		if err != nil {
			return nil, s.rdPos, err
		}
		out = recs
		if len(out) > 0 {
			break
		}
		// Nothing to ship, but the reader may have moved past finished segments: record
		// that, so they are deleted and Pending turns false.
		// Only when everything handed out before is acknowledged, or Ack would cover it too.
		s.mu.Lock()
		moved := s.rdPos != s.acked && s.handed == s.acked
		s.mu.Unlock()
		if moved {
			if err := s.Ack(s.rdPos); err != nil {
				return nil, s.rdPos, err
			}
		}
		select {
		case <-ctx.Done():
			return nil, s.rdPos, ctx.Err()
		case <-s.appended:
		case <-time.After(time.Second):
		}
	}
	s.mu.Lock()
	s.handed = s.rdPos
	s.mu.Unlock()
	return out, s.rdPos, nil
}

// readAvailable reads whole frames up to the writer's committed size of each segment.
func (s *Spool) readAvailable(max int) ([][]byte, error) {
	var out [][]byte
	for len(out) < max {
		s.mu.Lock()
		curID := s.curID
		limit, exists := s.sizes[s.rdPos.Segment]
		s.mu.Unlock()
		if !exists {
			if s.rdPos.Segment >= curID {
				return out, nil
			}
			s.advanceSegment()
			continue
		}
		if s.rdPos.Offset >= limit {
			if s.rdPos.Segment >= curID {
				return out, nil // caught up with the writer
			}
			s.advanceSegment()
			continue
		}
		if s.rd == nil {
			f, err := os.Open(filepath.Join(s.cfg.Dir, segName(s.rdPos.Segment)))
			if err != nil {
				return out, fmt.Errorf("open spool segment: %w", err)
			}
			if _, err := f.Seek(s.rdPos.Offset, io.SeekStart); err != nil {
				f.Close()
				return out, fmt.Errorf("seek spool segment: %w", err)
			}
			s.rd, s.rdBuf = f, bufio.NewReaderSize(f, 1<<20)
		}
		var hdr [frameHeader]byte
		if limit-s.rdPos.Offset < frameHeader {
			s.corrupt("truncated frame header")
			continue
		}
		if _, err := io.ReadFull(s.rdBuf, hdr[:]); err != nil {
			s.corrupt("unreadable frame header: " + err.Error())
			continue
		}
		n := int64(binary.LittleEndian.Uint32(hdr[0:4]))
		if s.rdPos.Offset+frameHeader+n > limit {
			s.corrupt(fmt.Sprintf("frame of %d bytes runs past the segment end", n))
			continue
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(s.rdBuf, payload); err != nil {
			s.corrupt("unreadable frame: " + err.Error())
			continue
		}
		if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(hdr[4:8]) {
			s.corrupt("checksum mismatch")
			continue
		}
		s.rdPos.Offset += frameHeader + n
		out = append(out, payload)
	}
	return out, nil
}

// corrupt gives up on the rest of the segment being read: a torn or damaged tail.
func (s *Spool) corrupt(why string) {
	s.log.Error("usage spool segment damaged; skipping its rest", "segment", s.rdPos.Segment, "offset", s.rdPos.Offset, "reason", why)
	s.mu.Lock()
	s.sizes[s.rdPos.Segment] = s.rdPos.Offset
	s.mu.Unlock()
	s.advanceSegment()
}

func (s *Spool) advanceSegment() {
	if s.rd != nil {
		s.rd.Close()
		s.rd, s.rdBuf = nil, nil
	}
	s.rdPos = Position{Segment: s.rdPos.Segment + 1}
}

// Ack records that everything before pos is shipped, persists the cursor and deletes
// segments that are wholly shipped.
func (s *Spool) Ack(pos Position) error {
	tmp := filepath.Join(s.cfg.Dir, "cursor.tmp")
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d %d\n", pos.Segment, pos.Offset)), 0o640); err != nil {
		return fmt.Errorf("write spool cursor: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.cfg.Dir, "cursor")); err != nil {
		return fmt.Errorf("write spool cursor: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acked = pos
	for id, size := range s.sizes {
		if id < pos.Segment && id != s.curID {
			if err := os.Remove(filepath.Join(s.cfg.Dir, segName(id))); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("delete shipped spool segment: %w", err)
			}
			delete(s.sizes, id)
			s.total -= size
		}
	}
	if s.full && s.total < s.cfg.MaxBytes/2 {
		s.full = false
		s.log.Info("usage spool drained below half; accepting completions", "bytes", s.total)
	}
	return nil
}

// Close stops Appends, fsyncs and closes the files. Unshipped records stay on disk and
// are shipped by the next process that opens the spool.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var err error
	if s.cur != nil {
		err = s.cur.Sync()
		s.cur.Close()
	}
	s.mu.Unlock()
	s.stopFn()
	<-s.done
	if s.rd != nil {
		s.rd.Close()
	}
	s.lock.Close() // releases the flock
	return err
}

// closeAppends stops Appends without closing the reader side.
func (s *Spool) closeAppends() {
	s.mu.Lock()
	s.noAppends = true
	s.mu.Unlock()
}
