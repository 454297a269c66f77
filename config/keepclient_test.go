package config

import "testing"

// TestKeepClientKeys: the keys for another ACME client kept beside
// tlsalpn are read, at the top level and per route.
func TestKeepClientKeys(t *testing.T) {
	src := `acme_forward: 127.0.0.1:5001
acme_cert_dir: /var/lib/dehydrated/alpn-certs
ualpn_socket: /run/ualpn.sock
routes:
  - names: ["*"]
    backend: 127.0.0.1:8443
    acme_forward: 127.0.0.1:5002
`
	c, err := Parse([]byte(src), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.ACMEForward != "127.0.0.1:5001" || c.ACMECertDir != "/var/lib/dehydrated/alpn-certs" || c.UALPNSocket != "/run/ualpn.sock" || c.Routes[0].ACMEForward != "127.0.0.1:5002" {
		t.Errorf("got %q %q %q %q", c.ACMEForward, c.ACMECertDir, c.UALPNSocket, c.Routes[0].ACMEForward)
	}
}
