// Package kafkaadmin creates the topics Venna uses.
package kafkaadmin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// EnsureTopic creates topic with the given partitions and replication factor through the
// cluster's controller; a topic that already exists is left as it is.
func EnsureTopic(ctx context.Context, brokers []string, topic string, partitions, replication int) error {
	return EnsureTopicConfig(ctx, brokers, topic, partitions, replication, nil)
}

// EnsureTopicConfig is EnsureTopic with topic-level settings (e.g. min.insync.replicas,
// retention.ms) for a topic it creates. An existing topic keeps its settings: change them
// with kafka-configs.sh --alter.
func EnsureTopicConfig(ctx context.Context, brokers []string, topic string, partitions, replication int, configs map[string]string) error {
	if len(brokers) == 0 {
		return errors.New("ensure topic: no brokers")
	}
	d := &kafka.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return fmt.Errorf("dial kafka %s: %w", brokers[0], err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("find kafka controller: %w", err)
	}
	cc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return fmt.Errorf("dial kafka controller: %w", err)
	}
	defer cc.Close()
	tc := kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: replication}
	for _, name := range slices.Sorted(maps.Keys(configs)) {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: name, ConfigValue: configs[name]})
	}
	err = cc.CreateTopics(tc)
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	// CreateTopics returns before every broker knows the topic: wait until each partition
	// has a leader, so that a producer started next does not fail on it.
	for {
		parts, err := conn.ReadPartitions(topic)
		if err == nil && len(parts) > 0 && allLed(parts) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s has no leaders yet: %w", topic, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func allLed(parts []kafka.Partition) bool {
	for _, p := range parts {
		if p.Leader.Host == "" {
			return false
		}
	}
	return true
}

// TopicConfig returns the given topic-level settings of topic as the broker reports them
// (its own defaults included).
func TopicConfig(ctx context.Context, brokers []string, topic string, names ...string) (map[string]string, error) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	resp, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: names},
	}})
	if err != nil {
		return nil, fmt.Errorf("describe configs of %s: %w", topic, err)
	}
	out := map[string]string{}
	for _, r := range resp.Resources {
		if r.Error != nil {
			return nil, fmt.Errorf("describe configs of %s: %w", topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			out[e.ConfigName] = e.ConfigValue
		}
	}
	return out, nil
}
