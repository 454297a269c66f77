package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadHostingScale: the configuration of a hosting node, 10,000
// routes each for a site's name and its www name, loads. Such a file is
// over 1 MiB, which Load once refused as "not a configuration".
func TestLoadHostingScale(t *testing.T) {
	if testing.Short() {
		t.Skip("parses a 10,000-route file")
	}
	const n = 10_000
	var sb strings.Builder
	sb.WriteString("listen: \"127.0.0.1:4443\"\nproxy: {steer: \"off\"}\nroutes:\n")
	for i := range n {
		fmt.Fprintf(&sb, "  - names: [customer%05d-shop.example.com, www.customer%05d-shop.example.com]\n    backend: \"127.0.0.1:8443\"\n", i, i)
	}
	path := filepath.Join(t.TempDir(), "hosting.yaml")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("%d routes, %d KiB: %v", n, sb.Len()>>10, err)
	}
	if len(c.Routes) != n {
		t.Fatalf("%d routes loaded, want %d", len(c.Routes), n)
	}
}
