// Package deploy holds deployment material: compose, routes, prices, Kafka pom; its tests check that material.
package deploy
