package clusterrpc

import "testing"

func TestServerConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(c *ServerConfig)
		ok     bool
	}{
		{"single server", func(c *ServerConfig) {}, true},
		{"three with joins", func(c *ServerConfig) { c.BootstrapExpect = 3; c.Join = []string{"a:1", "b:1"} }, true},
		{"join only", func(c *ServerConfig) { c.BootstrapExpect = 0; c.Join = []string{"a:1"} }, true},
		{"three without joins", func(c *ServerConfig) { c.BootstrapExpect = 3 }, false},
		{"two servers", func(c *ServerConfig) { c.BootstrapExpect = 2; c.Join = []string{"a:1"} }, false},
		{"join only without joins", func(c *ServerConfig) { c.BootstrapExpect = 0 }, false},
		{"no bind address", func(c *ServerConfig) { c.BindAddr = "" }, false},
		{"no store config", func(c *ServerConfig) { c.Store = nil }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultServerConfig()
			tc.mutate(c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
