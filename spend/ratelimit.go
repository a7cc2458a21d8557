package spend

import (
	"fmt"
	"math"
	"time"

	"github.com/venna/metering/gateway"
)

// buckets are one owner's rate limits on this replica: token buckets holding this
// replica's share (1/replicas) of the per-minute limits, refilled continuously. The shares
// of all replicas add up to the limit, so together they never admit more than it per
// minute, however the load is spread; a replica that takes most of an owner's traffic
// refuses earlier than a single process would (see README.md, "Spend control").
type buckets struct {
	limit    RateLimit
	replicas int
	req, tok bucket
}

type bucket struct {
	limit    float64 // per minute, all replicas together; 0: none
	capacity float64 // this replica's share
	rate     float64 // refill per second
	level    float64
	last     time.Time
}

func newBucket(limit float64, replicas int, now time.Time) bucket {
	b := bucket{limit: limit, last: now}
	b.scale(replicas)
	b.level = b.capacity
	return b
}

// scale sets the bucket to a share of 1/replicas, keeping how full it is.
func (b *bucket) scale(replicas int) {
	capacity := b.limit / float64(replicas)
	if b.capacity > 0 {
		b.level *= capacity / b.capacity
	}
	b.capacity, b.rate = capacity, capacity/60
}

func (b *bucket) refill(now time.Time) {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.level = math.Min(b.capacity, b.level+dt*b.rate)
		b.last = now
	}
}

// wait is how long until n can be taken (0: now). n above the whole share waits for a full
// bucket: a prompt larger than a minute's share is admitted once nothing else is pending.
func (b *bucket) wait(n float64) time.Duration {
	if b.limit == 0 {
		return 0
	}
	need := math.Min(n, b.capacity)
	if b.level >= need {
		return 0
	}
	return time.Duration((need - b.level) / b.rate * float64(time.Second))
}

func (b *bucket) state(replicas int) gateway.RateLimitState {
	if b.limit == 0 {
		return gateway.RateLimitState{}
	}
	remaining := int64(math.Max(0, math.Floor(b.level))) * int64(replicas)
	return gateway.RateLimitState{Limit: int64(b.limit), Remaining: min(remaining, int64(b.limit)),
		Reset: time.Duration((b.capacity - b.level) / b.rate * float64(time.Second))}
}

// bucketsLocked returns o's buckets, brought to its limit, the replica count and now.
func (l *Limiter) bucketsLocked(o *ownerState, replicas int, now time.Time) *buckets {
	b, r := &o.buckets, o.limit
	if !o.hasBuckets || b.limit.RPM != r.RPM || b.limit.TPM != r.TPM {
		*b = buckets{limit: r, replicas: replicas,
			req: newBucket(float64(r.RPM), replicas, now), tok: newBucket(float64(r.TPM), replicas, now)}
		o.hasBuckets = true
	}
	if b.replicas != replicas {
		b.req.scale(replicas)
		b.tok.scale(replicas)
		b.replicas = replicas
	}
	b.req.refill(now)
	b.tok.refill(now)
	return b
}

// wait is how long until a request with a prompt of promptTokens fits, and which limit
// holds it back: "requests" or "tokens".
func (b *buckets) wait(promptTokens int64) (time.Duration, string) {
	if w := b.req.wait(1); w > 0 {
		return w, "requests"
	}
	if w := b.tok.wait(float64(promptTokens)); w > 0 {
		return w, "tokens"
	}
	return 0, ""
}

func (b *buckets) take(promptTokens int64) {
	if b.req.limit > 0 {
		b.req.level--
	}
	if b.tok.limit > 0 {
		b.tok.level -= float64(promptTokens)
	}
}

// correct charges the token bucket what a request used beyond what it reserved (or gives
// back what it did not use). A debt is bounded by one minute's share.
func (b *buckets) correct(tokens int64, now time.Time) {
	if b.tok.limit == 0 {
		return
	}
	b.tok.refill(now)
	b.tok.level = math.Max(b.tok.level-float64(tokens), -b.tok.capacity)
}

func (b *buckets) describeLimit(kind string) string {
	if kind == "requests" {
		return fmt.Sprintf("%d requests", b.limit.RPM)
	}
	return fmt.Sprintf("%d tokens", b.limit.TPM)
}

// headersOf states the tightest of the limits that apply, as OpenAI's headers do.
func headersOf(bs []*buckets, replicas int) gateway.RateLimitHeaders {
	var h gateway.RateLimitHeaders
	for _, b := range bs {
		if s := b.req.state(replicas); s.Limit > 0 && (h.Requests.Limit == 0 || s.Remaining < h.Requests.Remaining) {
			h.Requests = s
		}
		if s := b.tok.state(replicas); s.Limit > 0 && (h.Tokens.Limit == 0 || s.Remaining < h.Tokens.Remaining) {
			h.Tokens = s
		}
	}
	return h
}
