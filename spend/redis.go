package spend

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisShared is Shared on Redis: one counter per owner and month (INCRBY of nano-USD) and
// a sorted set of live replicas scored by their last sync. One pipelined round trip per
// sync, whatever the traffic.
type RedisShared struct {
	client redis.UniversalClient
	prefix string // keys: <prefix>spend:<YYYYMM>:<owner>, <prefix>replicas
	id     string
	alive  time.Duration
}

// NewRedisShared shares through client under keys named for namespace (the ClickHouse
// database: deployments that share a Redis stay apart). A replica that has not synced for
// alive no longer counts toward the rate limits' shares.
func NewRedisShared(client redis.UniversalClient, namespace, replicaID string, alive time.Duration) *RedisShared {
	return &RedisShared{client: client, prefix: "venna:" + namespace + ":", id: replicaID, alive: alive}
}

// raiseTo sets a counter to ARGV[1] if it is below: a floor from ClickHouse, for a counter
// that lost what it held (Redis restarted without persistence) or started mid-month.
const raiseTo = `local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 0`

func (r *RedisShared) key(month time.Time, owner string) string {
	return r.prefix + "spend:" + month.Format("200601") + ":" + owner
}

// Sync implements Shared.
func (r *RedisShared) Sync(ctx context.Context, month time.Time, deltas, floors map[string]int64, owners []string) (map[string]int64, int, error) {
	const keep = 40 * 24 * time.Hour
	pipe := r.client.Pipeline()
	for o, d := range deltas {
		k := r.key(month, o)
		pipe.IncrBy(ctx, k, d)
		pipe.Expire(ctx, k, keep)
	}
	keys := make([]string, len(owners))
	for i, o := range owners {
		keys[i] = r.key(month, o)
		if f := floors[o]; f > 0 {
			pipe.Eval(ctx, raiseTo, []string{keys[i]}, f, int64(keep/time.Second))
		}
	}
	now := time.Now()
	replicas := r.prefix + "replicas"
	pipe.ZAdd(ctx, replicas, redis.Z{Score: float64(now.UnixMilli()), Member: r.id})
	pipe.ZRemRangeByScore(ctx, replicas, "-inf", strconv.FormatInt(now.Add(-r.alive).UnixMilli(), 10))
	pipe.Expire(ctx, replicas, time.Hour)
	card := pipe.ZCard(ctx, replicas)
	var get *redis.SliceCmd
	if len(keys) > 0 {
		get = pipe.MGet(ctx, keys...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, fmt.Errorf("sync spend with redis: %w", err)
	}
	totals := make(map[string]int64, len(owners))
	if get != nil {
		for i, v := range get.Val() {
			s, ok := v.(string)
			if !ok {
				continue // no counter yet
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, 0, fmt.Errorf("redis spend counter %s: %q is not an integer", keys[i], s)
			}
			totals[owners[i]] = n
		}
	}
	return totals, int(card.Val()), nil
}
