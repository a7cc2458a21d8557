// Package ingest loads usage events from Kafka into ClickHouse. Delivery from Kafka is
// at least once; billing is exactly once because every event carries a unique event_id
// that storage and every reader dedup on. README.md beside this file says why that is
// correct on ClickHouse's semantics, what the dead-letter topic holds and how memory is
// bounded.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"
	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/schema"
)

// Config configures one consumer; any number of consumers with the same GroupID share
// the topic's partitions.
type Config struct {
	Brokers       []string
	Topic         string
	GroupID       string
	Database      string        // ClickHouse database holding usage_events
	DLQTopic      string        // dead-letter topic for invalid messages; default DLQTopicFor(Topic)
	BatchSize     int           // events per insert; default 50000 (the benchmarked knee: README)
	FlushInterval time.Duration // longest an event waits for its batch to fill; default 1s
	MaxBackoff    time.Duration // cap on the retry delay while ClickHouse or Kafka fails; default 10s
	DrainTimeout  time.Duration // how long a stopping consumer keeps trying to flush; default 30s
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case len(c.Brokers) == 0 || c.Brokers[0] == "":
		return errors.New("ingest: Brokers (VENNA_KAFKA_BROKERS) is empty")
	case c.Topic == "":
		return errors.New("ingest: Topic (VENNA_KAFKA_TOPIC) is empty")
	case c.GroupID == "":
		return errors.New("ingest: GroupID (VENNA_INGEST_GROUP) is empty")
	case c.Database == "":
		return errors.New("ingest: Database (VENNA_CLICKHOUSE_DATABASE) is empty")
	case c.DLQTopic != "" && c.DLQTopic == c.Topic:
		return errors.New("ingest: DLQTopic (VENNA_INGEST_DLQ_TOPIC) is the usage topic itself")
	case c.BatchSize < 0:
		return errors.New("ingest: BatchSize (VENNA_INGEST_BATCH_SIZE) is negative")
	case c.FlushInterval < 0:
		return errors.New("ingest: FlushInterval (VENNA_INGEST_FLUSH_INTERVAL) is negative")
	case c.MaxBackoff < 0:
		return errors.New("ingest: MaxBackoff is negative")
	case c.DrainTimeout < 0:
		return errors.New("ingest: DrainTimeout is negative")
	}
	return nil
}

// Consumer is one member of the ingest consumer group.
type Consumer struct {
	cfg     Config
	conn    driver.Conn
	reader  *kafka.Reader
	dlq     *kafka.Writer
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics
	stats   struct{ fetched, inserted, invalid, duplicates, batches atomic.Int64 }
	strs    interner // the fetch loop's (see decodeEvent)

	running, failed, insertFailing, fetchFailing atomic.Bool

	// validate is schema.UsageEvent.Validate; tests swap it for a buggy one to make
	// dead letters that a redrive (with the real one) fixes.
	validate func(*schema.UsageEvent) error
	// afterInsert, when set (tests), runs between the insert and the commit.
	afterInsert func() error
}

// Stats counts what a consumer did.
type Stats struct {
	Fetched    int64 // Kafka messages fetched
	Inserted   int64 // rows inserted (duplicates within a batch excluded)
	Invalid    int64 // messages that broke the contract and went to the dead-letter topic
	Duplicates int64 // events dropped as copies of one earlier in the same batch
	Batches    int64 // batches inserted and committed
}

// New returns a consumer; it refuses an invalid Config.
func New(cfg Config, conn driver.Conn, log *slog.Logger) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DLQTopic == "" {
		cfg.DLQTopic = DLQTopicFor(cfg.Topic)
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 50000
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: cfg.Brokers,
		GroupID: cfg.GroupID,
		Topic:   cfg.Topic,
		// Each assigned partition has a reader goroutine that fetches up to MaxBytes and
		// hands messages one by one to a channel of QueueCapacity. Run stops taking from
		// it while an insert fails, so the readers block and stop fetching: the memory
		// bound (README.md).
		MinBytes:       1,
		MaxBytes:       8 << 20,
		MaxWait:        250 * time.Millisecond,
		QueueCapacity:  cfg.BatchSize,
		CommitInterval: 0, // commits are synchronous: Run commits only after an insert
		StartOffset:    kafka.FirstOffset,
		// A new member joins quickly; a dead one is noticed within SessionTimeout.
		HeartbeatInterval: time.Second,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  10 * time.Second,
		Logger:            nil,
		ErrorLogger:       kafka.LoggerFunc(func(msg string, args ...any) { log.Debug(fmt.Sprintf(msg, args...), "component", "kafka-reader") }),
	})
	c := &Consumer{cfg: cfg, conn: conn, reader: r, dlq: newWriter(cfg.Brokers, cfg.DLQTopic), log: log, now: time.Now,
		strs: interner{}, validate: (*schema.UsageEvent).Validate}
	c.metrics = newMetrics(newLagCollector(cfg.Brokers, cfg.Topic, cfg.GroupID))
	return c, nil
}

// Stats returns the consumer's counters.
func (c *Consumer) Stats() Stats {
	return Stats{Fetched: c.stats.fetched.Load(), Inserted: c.stats.inserted.Load(), Invalid: c.stats.invalid.Load(),
		Duplicates: c.stats.duplicates.Load(), Batches: c.stats.batches.Load()}
}

// Run consumes until ctx ends, then flushes what it holds (for up to DrainTimeout),
// commits, and leaves the group. A consumer runs once.
//
// Two goroutines share the work: this one fetches and decodes messages into a batch;
// a flusher inserts and commits the previous batch meanwhile. The hand-over is
// unbuffered, so at most two batches are held, and while the flusher retries a failed
// insert this one stops fetching.
func (c *Consumer) Run(ctx context.Context) (err error) {
	c.running.Store(true)
	defer func() {
		c.running.Store(false)
		if err != nil {
			c.failed.Store(true)
		}
		// Leave the group only now, after the last commit.
		err = errors.Join(err, c.reader.Close(), c.dlq.Close())
	}()

	// The flusher outlives ctx by DrainTimeout, so that a stop flushes what was fetched.
	flushCtx, cancelFlush := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFlush()
	stopDrain := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(c.cfg.DrainTimeout, cancelFlush)
		context.AfterFunc(flushCtx, func() { t.Stop() })
	})
	defer stopDrain()

	// The fetch loop also stops when the flusher fails.
	fetchCtx, cancelFetch := context.WithCancel(ctx)
	defer cancelFetch()
	batches := make(chan *batch)
	flusherDone := make(chan struct{})
	var flushErr error
	go func() {
		defer close(flusherDone)
		for b := range batches {
			if flushErr = c.flush(flushCtx, b); flushErr != nil {
				cancelFetch()
				return // later batches must not be committed past this one's offsets
			}
		}
	}()

	fetchErr := c.fetchLoop(fetchCtx, batches, flusherDone)
	close(batches)
	<-flusherDone
	if errors.Is(fetchErr, errFlusherStopped) {
		fetchErr = nil // flushErr says why
	}
	if errors.Is(flushErr, context.Canceled) && ctx.Err() != nil {
		// Stopped while ClickHouse or Kafka was failing: what was not stored is not
		// committed, so the group redelivers it to the next owner.
		c.log.Warn("stopped before the last batch was stored; it will be redelivered", "err", flushErr)
		flushErr = nil
	}
	return errors.Join(fetchErr, flushErr)
}

var errFlusherStopped = errors.New("flusher stopped")

// fetchLoop fills batches and hands them to the flusher until ctx ends (after handing
// over the partial batch) or the flusher fails.
func (c *Consumer) fetchLoop(ctx context.Context, batches chan<- *batch, flusherDone <-chan struct{}) error {
	cur := c.newBatch(c.cfg.BatchSize)
	defer func() {
		if cur.cancel != nil {
			cur.cancel()
		}
	}()
	handOver := func() error {
		if cur.messages == 0 {
			return nil
		}
		cur.filled = time.Now()
		cur.cancel()
		n := cur.messages
		select {
		case batches <- cur:
			cur = c.newBatch(n)
			return nil
		case <-flusherDone:
			return errFlusherStopped
		}
	}
	backoff := 100 * time.Millisecond
	for {
		fetchCtx := ctx
		if cur.messages > 0 {
			fetchCtx = cur.ctx // one deadline per batch, not one timer per message
		}
		m, err := c.reader.FetchMessage(fetchCtx)
		switch {
		case err == nil:
			c.fetchFailing.Store(false)
			backoff = 100 * time.Millisecond
			c.stats.fetched.Add(1)
			if cur.messages == 0 {
				cur.deadline = c.now().Add(c.cfg.FlushInterval)
				cur.ctx, cur.cancel = context.WithDeadline(ctx, cur.deadline)
				cur.started = time.Now()
			}
			c.add(cur, m)
			if cur.messages < c.cfg.BatchSize {
				continue
			}
		case ctx.Err() != nil:
			return handOver()
		case errors.Is(err, context.DeadlineExceeded):
			// The batch's flush interval ran out.
		case errors.Is(err, io.EOF):
			return fmt.Errorf("fetch from kafka: reader closed: %w", err)
		default:
			// The group could not be joined (broker down, coordinator moving): the reader
			// keeps trying by itself; wait and ask again. The batch in hand stays.
			c.fetchFailing.Store(true)
			c.metrics.fetchErrors.Inc()
			c.log.Warn("kafka fetch failed; retrying", "backoff", backoff, "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return handOver()
			}
			backoff = min(backoff*2, c.cfg.MaxBackoff)
			if cur.messages == 0 || c.now().Before(cur.deadline) {
				continue
			}
		}
		if err := handOver(); err != nil {
			return err
		}
	}
}

// add decodes m into b: a valid event becomes a row (unless its event_id is already in
// the batch), an invalid message a dead letter. Only a dead letter keeps its bytes; for the
// commit, the batch keeps the next offset of each partition.
func (c *Consumer) add(b *batch, m kafka.Message) {
	b.messages++
	for len(b.next) <= m.Partition {
		b.next = append(b.next, -1)
	}
	b.next[m.Partition] = m.Offset + 1
	var ev schema.UsageEvent
	if class, err := check(m.Value, &ev, &c.strs, c.validate); err != nil {
		b.dead = append(b.dead, deadLetter{msg: m, class: class, reason: err})
		return
	}
	if _, dup := b.seen[ev.EventID]; dup {
		b.duplicates++
		return
	}
	b.seen[ev.EventID] = struct{}{}
	b.rows.add(&ev, int32(m.Partition), m.Offset)
}

// flush makes a batch durable and then acknowledges it. The order is the guarantee:
//  1. write its invalid messages to the dead-letter topic (retrying until acknowledged)
//  2. insert its rows into ClickHouse (retrying until it succeeds or ctx ends)
//  3. commit the offsets
//
// A crash before 3 redelivers the batch: event_id dedup absorbs the second copy of a
// row, and a second copy of a dead letter is harmless. Nothing is committed that is
// neither stored nor dead-lettered.
func (c *Consumer) flush(ctx context.Context, b *batch) error {
	t0 := time.Now()
	if len(b.dead) > 0 {
		if err := c.deadLetter(ctx, b.dead); err != nil {
			return err
		}
	}
	if err := c.insertWithRetry(ctx, &b.rows); err != nil {
		return err
	}
	if c.afterInsert != nil {
		if err := c.afterInsert(); err != nil {
			return err
		}
	}
	t1 := time.Now()
	if err := c.commit(ctx, b); err != nil {
		return err
	}
	c.log.Debug("batch flushed", "messages", b.messages, "filled_in", b.filled.Sub(b.started), "waited", t0.Sub(b.filled), "stored_in", t1.Sub(t0), "committed_in", time.Since(t1))
	c.stats.inserted.Add(int64(b.rows.n))
	c.stats.invalid.Add(int64(len(b.dead)))
	c.stats.duplicates.Add(int64(b.duplicates))
	c.stats.batches.Add(1)
	c.metrics.inserted.Add(float64(b.rows.n))
	c.metrics.duplicates.Add(float64(b.duplicates))
	c.metrics.batches.Inc()
	c.metrics.committed.Add(float64(b.messages))
	c.metrics.batchSize.Observe(float64(b.messages))
	return nil
}

// retry runs op until it succeeds or ctx ends, with capped exponential backoff. onFail
// sees each failure (attempt counts from 1).
func (c *Consumer) retry(ctx context.Context, op func() error, onFail func(attempt int, backoff time.Duration, err error)) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		onFail(attempt, backoff, err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
}

func (c *Consumer) deadLetter(ctx context.Context, dead []deadLetter) error {
	now := c.now()
	msgs := make([]kafka.Message, len(dead))
	for i, d := range dead {
		msgs[i] = d.message(now)
		c.log.Warn("invalid usage event dead-lettered", "partition", d.msg.Partition, "offset", d.msg.Offset, "reason", d.reason)
	}
	err := c.retry(ctx, func() error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return c.dlq.WriteMessages(ctx, msgs...)
	}, func(attempt int, backoff time.Duration, err error) {
		c.log.Error("dead-letter write failed; retrying (did 'venna migrate' create the topic?)",
			"topic", c.cfg.DLQTopic, "messages", len(msgs), "attempt", attempt, "backoff", backoff, "err", err)
	})
	if err != nil {
		return fmt.Errorf("dead-letter %d messages to %s: %w", len(msgs), c.cfg.DLQTopic, err)
	}
	for _, d := range dead {
		c.metrics.deadLettered.WithLabelValues(d.class).Inc()
	}
	return nil
}

func (c *Consumer) insertWithRetry(ctx context.Context, rows *eventColumns) error {
	if rows.n == 0 {
		return nil
	}
	var failedSince time.Time
	err := c.retry(ctx, func() error {
		// An insert once started is not cut off by shutdown: cancelling it midway leaves it
		// unknown whether the server stored the rows, which costs a redelivery.
		insCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		start := time.Now()
		if err := c.insert(insCtx, rows); err != nil {
			c.metrics.insertFailures.Inc()
			return err
		}
		c.metrics.insertSeconds.Observe(time.Since(start).Seconds())
		return nil
	}, func(attempt int, backoff time.Duration, err error) {
		if attempt == 1 {
			failedSince = time.Now()
			c.insertFailing.Store(true)
			c.log.Error("clickhouse insert failed: consumption paused, offsets not committed; retrying", "rows", rows.n, "err", err)
			return
		}
		c.log.Warn("clickhouse insert still failing; retrying", "rows", rows.n, "attempt", attempt, "backoff", backoff,
			"failing_for", time.Since(failedSince).Round(time.Second), "err", err)
	})
	if err != nil {
		return fmt.Errorf("insert batch of %d: %w", rows.n, err)
	}
	if c.insertFailing.Swap(false) {
		c.log.Info("clickhouse insert recovered; consuming again", "rows", rows.n, "failed_for", time.Since(failedSince).Round(time.Second))
	}
	return nil
}

func (c *Consumer) commit(ctx context.Context, b *batch) error {
	var msgs []kafka.Message
	for p, next := range b.next {
		if next >= 0 {
			// CommitMessages commits a message's offset + 1: the next one to read.
			msgs = append(msgs, kafka.Message{Topic: c.cfg.Topic, Partition: p, Offset: next - 1})
		}
	}
	// The rows are stored: commit even if shutdown began meanwhile (ctx is the flusher's,
	// which outlives the stop by DrainTimeout), so that a graceful stop redelivers nothing.
	err := c.retry(ctx, func() error {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		err := c.reader.CommitMessages(ctx, msgs...)
		if err != nil {
			c.metrics.commitFailures.Inc()
		}
		return err
	}, func(attempt int, backoff time.Duration, err error) {
		c.log.Warn("kafka commit failed; retrying", "partitions", len(msgs), "attempt", attempt, "backoff", backoff, "err", err)
	})
	if err != nil {
		// The rows are stored; an uncommitted offset only means redelivery, which dedup absorbs.
		return fmt.Errorf("commit offsets of %d partitions: %w", len(msgs), err)
	}
	return nil
}

// batch is what one insert and one commit cover.
type batch struct {
	messages        int                 // Kafka messages, valid or not
	deadline        time.Time           // when the batch is flushed even if not full
	rows            eventColumns        // valid events, deduplicated by event_id
	seen            map[string]struct{} // event_ids in rows
	duplicates      int                 // events dropped as already in rows
	dead            []deadLetter        // invalid messages, with their bytes
	next            []int64             // by partition: the offset after the last message read; -1: none
	ctx             context.Context     // ends at deadline: the fetches of a non-empty batch wait no longer
	cancel          context.CancelFunc
	started, filled time.Time // for the debug log
}

// newBatch returns an empty batch with room for as many events as the previous one had
// (a quiet topic does not allocate full-size batches every FlushInterval).
func (c *Consumer) newBatch(previous int) *batch {
	n := min(c.cfg.BatchSize, max(previous, 256))
	b := &batch{seen: make(map[string]struct{}, n)}
	b.rows.grow(n)
	return b
}

func (c *Consumer) insert(ctx context.Context, rows *eventColumns) error {
	b, err := c.conn.PrepareBatch(ctx, sqlset.Fill(insertEventsSQL, "db", c.cfg.Database))
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	// ingested_at is the time of this attempt: later jobs find late arrivals by it.
	rows.stamp(c.now())
	for i, col := range eventColumnList {
		if err := b.Column(i).Append(col.values(rows)); err != nil {
			b.Abort()
			return fmt.Errorf("append column %s: %w", col.name, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert batch of %d: %w", rows.n, err)
	}
	return nil
}
