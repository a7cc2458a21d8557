// Package ingest loads usage events from Kafka into ClickHouse. Delivery from Kafka is
// at least once; billing is exactly once because every event carries a unique event_id
// that storage and every reader dedup on.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"
	"github.com/venna/metering/schema"
)

// Config configures one consumer; any number of consumers with the same GroupID share
// the topic's partitions.
type Config struct {
	Brokers       []string
	Topic         string
	GroupID       string
	Database      string        // ClickHouse database holding usage_events
	BatchSize     int           // events per insert; default 10000
	FlushInterval time.Duration // longest an event waits for its batch to fill; default 1s
	MaxBackoff    time.Duration // cap on the retry delay while ClickHouse fails; default 10s
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
	case c.BatchSize < 0:
		return errors.New("ingest: BatchSize (VENNA_INGEST_BATCH_SIZE) is negative")
	case c.FlushInterval < 0:
		return errors.New("ingest: FlushInterval (VENNA_INGEST_FLUSH_INTERVAL) is negative")
	}
	return nil
}

// Consumer is one member of the ingest consumer group.
type Consumer struct {
	cfg    Config
	conn   driver.Conn
	reader *kafka.Reader
	log    *slog.Logger
	now    func() time.Time
	stats  struct{ inserted, invalid, batches atomic.Int64 }
	// afterInsert, when set (tests), runs between the insert and the commit.
	afterInsert func() error
}

// Stats counts what a consumer did.
type Stats struct {
	Inserted int64 // rows inserted (duplicates within a batch excluded)
	Invalid  int64 // messages that broke the contract and were skipped
	Batches  int64 // batches inserted and committed
}

// New returns a consumer; it refuses an invalid Config.
func New(cfg Config, conn driver.Conn, log *slog.Logger) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 10000
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        cfg.Brokers,
		GroupID:        cfg.GroupID,
		Topic:          cfg.Topic,
		MinBytes:       1,
		MaxBytes:       16 << 20,
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
	return &Consumer{cfg: cfg, conn: conn, reader: r, log: log, now: time.Now}, nil
}

// Stats returns the consumer's counters.
func (c *Consumer) Stats() Stats {
	return Stats{Inserted: c.stats.inserted.Load(), Invalid: c.stats.invalid.Load(), Batches: c.stats.batches.Load()}
}

// Run consumes until ctx ends, then flushes what it holds, commits, and leaves the group.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.reader.Close()
	batch := make([]kafka.Message, 0, c.cfg.BatchSize)
	var deadline time.Time
	for {
		fetchCtx, cancel := ctx, context.CancelFunc(func() {})
		if len(batch) > 0 {
			fetchCtx, cancel = context.WithDeadline(ctx, deadline)
		}
		m, err := c.reader.FetchMessage(fetchCtx)
		cancel()
		switch {
		case err == nil:
			if len(batch) == 0 {
				deadline = c.now().Add(c.cfg.FlushInterval)
			}
			batch = append(batch, m)
			if len(batch) < c.cfg.BatchSize {
				continue
			}
		case ctx.Err() != nil:
			// Shutdown: drain what we hold with a fresh context so it is not redelivered needlessly.
			drainCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.flush(drainCtx, batch); err != nil {
				return fmt.Errorf("final flush: %w", err)
			}
			return nil
		case errors.Is(err, context.DeadlineExceeded):
			// The batch's flush interval ran out.
		default:
			return fmt.Errorf("fetch from kafka: %w", err)
		}
		if err := c.flush(ctx, batch); err != nil {
			if ctx.Err() != nil {
				return nil // not committed: the group redelivers these to the next owner
			}
			return err
		}
		batch = batch[:0]
	}
}

// flush makes a batch durable and then acknowledges it. The order is the guarantee:
//  1. insert the rows into ClickHouse (retrying until it succeeds or ctx ends)
//  2. commit the offsets
//
// A crash between 1 and 2 redelivers the batch; event_id dedup absorbs the second copy.
func (c *Consumer) flush(ctx context.Context, batch []kafka.Message) error {
	if len(batch) == 0 {
		return nil
	}
	rows := c.decode(batch)
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		// An insert once started is not cut off by shutdown: cancelling it midway leaves it
		// unknown whether the server stored the rows, which costs a redelivery.
		insCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		err := c.insert(insCtx, rows)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("insert batch of %d: %w", len(rows), ctx.Err())
		}
		c.log.Warn("clickhouse insert failed; retrying", "rows", len(rows), "attempt", attempt, "backoff", backoff, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("insert batch of %d: %w", len(rows), ctx.Err())
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
	if c.afterInsert != nil {
		if err := c.afterInsert(); err != nil {
			return err
		}
	}
	// The rows are stored: commit even if shutdown began meanwhile, so that a graceful stop
	// redelivers nothing.
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err := c.reader.CommitMessages(commitCtx, batch...); err != nil {
		// The rows are stored; an uncommitted offset only means redelivery, which dedup absorbs.
		return fmt.Errorf("commit %d offsets: %w", len(batch), err)
	}
	c.stats.inserted.Add(int64(len(rows)))
	c.stats.batches.Add(1)
	return nil
}

type row struct {
	ev        schema.UsageEvent
	partition int32
	offset    int64
}

// decode parses and validates a batch, dropping in-batch duplicates of an event_id.
func (c *Consumer) decode(batch []kafka.Message) []row {
	rows := make([]row, 0, len(batch))
	seen := make(map[string]struct{}, len(batch))
	for _, m := range batch {
		var ev schema.UsageEvent
		err := json.Unmarshal(m.Value, &ev)
		if err == nil {
			err = ev.Validate()
		}
		if err != nil {
			c.stats.invalid.Add(1)
			c.log.Error("invalid usage event skipped", "partition", m.Partition, "offset", m.Offset, "err", err)
			continue
		}
		if _, dup := seen[ev.EventID]; dup {
			continue
		}
		seen[ev.EventID] = struct{}{}
		rows = append(rows, row{ev: ev, partition: int32(m.Partition), offset: m.Offset})
	}
	return rows
}

var columns = "event_id, schema_version, occurred_at, ingested_at, workspace_id, api_key_id, model, upstream, upstream_model, request_id, status, http_status, stream, estimated, latency_ms, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, accepted_prediction_tokens, rejected_prediction_tokens, total_tokens, kafka_partition, kafka_offset"

func (c *Consumer) insert(ctx context.Context, rows []row) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := c.conn.PrepareBatch(ctx, "INSERT INTO "+c.cfg.Database+".usage_events ("+columns+")")
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	ingested := c.now().UTC()
	for _, r := range rows {
		e := r.ev
		err := b.Append(e.EventID, uint8(e.SchemaVersion), e.OccurredAt.UTC(), ingested, e.WorkspaceID, e.APIKeyID,
			e.Model, e.Upstream, e.UpstreamModel, e.RequestID, e.Status, uint16(e.HTTPStatus), boolU8(e.Stream),
			boolU8(e.Estimated), uint32(max(e.LatencyMS, 0)), uint64(e.PromptTokens), uint64(e.CachedTokens),
			uint64(e.CompletionTokens), uint64(e.ReasoningTokens), uint64(e.AcceptedPredictionTokens),
			uint64(e.RejectedPredictionTokens), uint64(e.TotalTokens), r.partition, r.offset)
		if err != nil {
			b.Abort()
			return fmt.Errorf("append event %s: %w", e.EventID, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert batch of %d: %w", len(rows), err)
	}
	return nil
}

func boolU8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
