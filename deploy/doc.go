// Package deploy holds deployment material — compose, Kubernetes manifests, the
// ClickHouse cluster settings, the Grafana dashboard, routes, prices, the Kafka pom — and
// its tests check that material against the code (see README.md here).
package deploy
