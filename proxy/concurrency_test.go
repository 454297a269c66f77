package proxy

import (
	"fmt"
	"sync"
	"testing"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/manager"
)

// TestConcurrentMix runs many clients at once, mixing validation
// handshakes, normal handshakes with acme-tls/1 among other protocols,
// acme-tls/1 for names a backend answers itself, and terminated HTTPS,
// while the configuration is reloaded and certificates swapped: under
// -race this is the test of the proxy's shared state.
func TestConcurrentMix(t *testing.T) {
	r, id := pendingResponder(t, "example.com")
	be := startBackend(t, tlsEchoHandler(selfSigned(t, "backend.example")))
	cert := selfSigned(t, "app.example")
	cache := manager.NewCache()
	cache.Put([]string{"app.example"}, cert)
	httpBE := httpBackend(t, "http")
	cfg := Config{Routes: []Route{
		{Names: []string{"app.example"}, Backend: httpBE.Listener.Addr().String(), Mode: TerminateHTTP},
		{Names: []string{"*"}, Backend: be.addr},
	}}
	p := startProxy(t, cfg, r, cache)

	const clients, rounds = 24, 6
	kinds := []struct {
		name string
		run  func() error
	}{
		{"validation", func() error {
			c, err := tlsDial(p.addr, "example.com", "acme-tls/1")
			if err != nil {
				return err
			}
			defer c.Close()
			return challenge.Verify(c.ConnectionState().PeerCertificates[0], id, keyAuth)
		}},
		{"h2 and acme-tls/1", func() error {
			c, err := tlsDial(p.addr, "example.com", "h2", "acme-tls/1")
			if err != nil {
				return err
			}
			defer c.Close()
			if hasACMEIdentifier(c.ConnectionState().PeerCertificates[0]) {
				return fmt.Errorf("validation certificate for a normal client")
			}
			return echoRoundTrip(c, "normal")
		}},
		{"acme-tls/1, not pending", func() error {
			c, err := tlsDial(p.addr, "self.example", "acme-tls/1")
			if err != nil {
				return err
			}
			defer c.Close()
			if leaf := c.ConnectionState().PeerCertificates[0]; leaf.DNSNames[0] != "backend.example" {
				return fmt.Errorf("got %v", leaf.DNSNames)
			}
			return echoRoundTrip(c, "self-solving backend")
		}},
		{"terminated HTTPS", func() error {
			c := httpsClient(p.addr, poolOf(cert), true, nil)
			defer c.CloseIdleConnections()
			resp, err := c.Get("https://app.example/")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s", resp.Status)
			}
			return nil
		}},
	}

	var wg sync.WaitGroup
	errs := make(chan error, clients*rounds)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range rounds {
				k := kinds[(i+j)%len(kinds)]
				if err := k.run(); err != nil {
					errs <- fmt.Errorf("client %d round %d, %s: %w", i, j, k.name, err)
				}
			}
		}()
	}
	stop := make(chan struct{})
	var churn sync.WaitGroup
	churn.Add(1)
	go func() { // reloads and certificate swaps meanwhile
		defer churn.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := p.Reload(cfg); err != nil {
				errs <- err
			}
			cache.Put([]string{"app.example"}, cert)
			p.Active()
		}
	}()
	wg.Wait()
	close(stop)
	churn.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	p.waitActive(t, 0)
}
