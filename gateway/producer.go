package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/venna/metering/schema"
)

// ProducerConfig configures the Kafka producer behind Publish.
type ProducerConfig struct {
	Brokers    []string
	Topic      string
	QueueSize  int           // events buffered in memory; default 65536
	BatchSize  int           // events per Kafka produce; default 1000
	MaxBackoff time.Duration // cap on the retry delay while Kafka is unreachable; default 5s
}

// Validate names the first bad field.
func (c ProducerConfig) Validate() error {
	switch {
	case len(c.Brokers) == 0 || c.Brokers[0] == "":
		return errors.New("producer: Brokers (VENNA_KAFKA_BROKERS) is empty")
	case c.Topic == "":
		return errors.New("producer: Topic (VENNA_KAFKA_TOPIC) is empty")
	case c.QueueSize < 0 || c.BatchSize < 0:
		return errors.New("producer: QueueSize and BatchSize must not be negative")
	}
	return nil
}

// ErrQueueClosed is returned by Publish after Close.
var ErrQueueClosed = errors.New("usage queue closed")

// Producer queues usage events in a bounded in-memory queue and ships them to Kafka in
// batches from one goroutine, keyed by workspace ID so that a workspace's events keep
// their order within a partition. A failed produce is retried with backoff, never dropped.
type Producer struct {
	cfg    ProducerConfig
	w      *kafka.Writer
	queue  chan schema.UsageEvent
	log    *slog.Logger
	mu     sync.RWMutex
	closed bool
	done   chan struct{}
}

// NewProducer starts the shipping goroutine; Close drains and stops it.
func NewProducer(cfg ProducerConfig, log *slog.Logger) (*Producer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 65536
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 1000
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	p := &Producer{
		cfg: cfg,
		w: &kafka.Writer{
			Addr:                   kafka.TCP(cfg.Brokers...),
			Topic:                  cfg.Topic,
			Balancer:               &kafka.Hash{},
			RequiredAcks:           kafka.RequireAll,
			BatchSize:              cfg.BatchSize,
			BatchTimeout:           time.Millisecond,
			MaxAttempts:            1, // retries are ours, so that nothing is ever given up on
			WriteTimeout:           10 * time.Second,
			Compression:            kafka.Lz4,
			AllowAutoTopicCreation: false,
			Transport:              &kafka.Transport{}, // not the shared default: its metadata cache is process-wide
		},
		queue: make(chan schema.UsageEvent, cfg.QueueSize),
		log:   log,
		done:  make(chan struct{}),
	}
	go p.run()
	return p, nil
}

// Publish enqueues ev. It waits only when the queue is full (Kafka has been unreachable
// for a while), and then at most until ctx ends, returning the context's error.
func (p *Producer) Publish(ctx context.Context, ev schema.UsageEvent) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrQueueClosed
	}
	select {
	case p.queue <- ev:
		return nil
	default:
	}
	select {
	case p.queue <- ev:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("usage queue full: %w", ctx.Err())
	}
}

// Queued reports the events waiting to be shipped.
func (p *Producer) Queued() int { return len(p.queue) }

func (p *Producer) run() {
	defer close(p.done)
	batch := make([]kafka.Message, 0, p.cfg.BatchSize)
	for ev := range p.queue {
		batch = append(batch[:0], encode(ev))
	fill:
		for len(batch) < p.cfg.BatchSize {
			select {
			case ev, ok := <-p.queue:
				if !ok {
					break fill
				}
				batch = append(batch, encode(ev))
			default:
				break fill
			}
		}
		p.ship(batch)
	}
}

// ship retries until Kafka takes the batch. A retry after a timeout may write a batch
// twice; the event_id dedup downstream makes that harmless, while giving up would lose usage.
func (p *Producer) ship(batch []kafka.Message) {
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := p.w.WriteMessages(context.Background(), batch...)
		if err == nil {
			return
		}
		if attempt == 1 || attempt%20 == 0 {
			p.log.Warn("kafka produce failed; retrying", "events", len(batch), "attempt", attempt, "err", err)
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, p.cfg.MaxBackoff)
	}
}

func encode(ev schema.UsageEvent) kafka.Message {
	b, err := json.Marshal(ev)
	if err != nil {
		// UsageEvent has only plain fields; Marshal cannot fail on it.
		panic(fmt.Sprintf("encode usage event: %v", err))
	}
	return kafka.Message{Key: []byte(ev.WorkspaceID), Value: b}
}

// Close stops taking events and waits until every queued event reached Kafka or ctx ends.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.queue)
	}
	p.mu.Unlock()
	select {
	case <-p.done:
		return p.w.Close()
	case <-ctx.Done():
		return fmt.Errorf("drain usage queue: %d events not shipped: %w", len(p.queue), ctx.Err())
	}
}
