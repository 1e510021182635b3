package store

import (
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	valid := func() *Config {
		c := DefaultConfig()
		c.ServerID, c.DataDir, c.AdvertiseAddr = "s1", "/tmp/x", "127.0.0.1:7400"
		return c
	}
	if err := valid().Validate(); err != nil {
		t.Fatalf("default config with id, dir and address: %v", err)
	}
	cases := map[string]func(c *Config){
		"no server id":         func(c *Config) { c.ServerID = "" },
		"no data dir":          func(c *Config) { c.DataDir = "" },
		"no advertise address": func(c *Config) { c.AdvertiseAddr = "" },
		"tiny heartbeat":       func(c *Config) { c.HeartbeatTimeout = time.Millisecond },
		"lease over heartbeat": func(c *Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout },
		"zero apply timeout":   func(c *Config) { c.ApplyTimeout = 0 },
		"zero snapshot retain": func(c *Config) { c.SnapshotRetain = 0 },
		"huge append batches":  func(c *Config) { c.MaxAppendEntries = 5000 },
		"no logger":            func(c *Config) { c.Logger = nil },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			c := valid()
			mutate(c)
			if err := c.Validate(); err == nil {
				t.Fatalf("accepted")
			}
		})
	}
}
