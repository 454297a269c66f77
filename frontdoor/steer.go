package frontdoor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/tlsalpn/tlsalpn/config"
	"github.com/tlsalpn/tlsalpn/steer"
)

// steerBackend returns the backend that cfg lets the kernel hand
// connections to directly, or why it cannot. Steering decides at the SYN,
// before any ClientHello, so it needs one destination for everything and
// nothing the front door itself must add or strip.
func steerBackend(cfg *config.Config) (backend, why string) {
	switch {
	case cfg.Proxy.Steer == config.SteerOff:
		return "", "proxy.steer is off"
	case len(cfg.Routes) != 1:
		return "", fmt.Sprintf("%d routes: choosing among them needs the ClientHello", len(cfg.Routes))
	case cfg.Routes[0].Mode != "" && cfg.Routes[0].Mode != config.ModePassthrough:
		return "", "the route terminates TLS here (mode " + cfg.Routes[0].Mode + ")"
	case !slices.Contains(cfg.Routes[0].Names, "*"):
		return "", `the route is not the default route "*": other names must be refused here`
	case cfg.Routes[0].SendProxy != 0:
		return "", "the backend expects a PROXY protocol header (send_proxy)"
	case len(cfg.Proxy.TrustedProxies) > 0:
		return "", "trusted_proxies send PROXY protocol headers, which only the front door can read"
	case keepClientSteerWhy(cfg) != "":
		return "", keepClientSteerWhy(cfg)
	}
	return cfg.Routes[0].Backend, ""
}

// steering is the front door's current steering: its Switch, which the
// responder holds while a challenge is pending, and the Steerer in it.
type steering struct {
	gate *steer.Switch
	key  string // "front backend" the current Steerer was made for
}

// apply starts, keeps or stops steering for cfg on the listener at front.
// It never fails: where steering cannot be had, the front door relays, and
// the log says why.
func (rt *runtime) applySteering(ctx context.Context, cfg *config.Config, front net.Addr) {
	backend, why := steerBackend(cfg)
	fp, err := netip.ParseAddrPort(front.String())
	if why == "" && err != nil {
		why = fmt.Sprintf("listen address %s: %v", front, err)
	}
	key := front.String() + " " + backend
	if why == "" && key == rt.steer.key {
		return // same front door, same backend: keep what runs
	}
	var s *steer.Steerer
	if why == "" {
		s, why = startSteering(ctx, rt, fp, backend)
	}
	if s == nil {
		key = ""
	}
	old, err := rt.steer.gate.Swap(s)
	if err != nil {
		s.Close()
		s, key = nil, ""
		why = err.Error()
		old, _ = rt.steer.gate.Swap(nil)
	}
	if old != nil {
		old.Close()
	}
	rt.steer.key = key
	if s != nil {
		rt.logger.Info("steering: while no challenge is pending, new connections go straight to the backend's listening socket; the front door takes them again during validation",
			"front", front.String(), "backend", backend, "socket", s.Socket().String())
		if fam := s.Relayed(); fam != "" {
			rt.logger.Info("steering: "+fam+" connections are relayed: the backend's socket does not take them", "socket", s.Socket().String())
		}
		return
	}
	rt.logger.Info("steering off: every connection is relayed through the front door", "why", why)
}

// startSteering steers fp to the first of backend's addresses that has a
// listening socket on this host.
func startSteering(ctx context.Context, rt *runtime, fp netip.AddrPort, backend string) (*steer.Steerer, string) {
	host, portStr, err := net.SplitHostPort(backend)
	if err != nil {
		return nil, fmt.Sprintf("backend %s: %v", backend, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Sprintf("backend %s: bad port", backend)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		addrs, err = net.DefaultResolver.LookupNetIP(lctx, "ip", host)
		cancel()
		if err != nil {
			return nil, fmt.Sprintf("backend %s: %v", backend, err)
		}
	}
	var whys []error
	for _, a := range addrs {
		s, err := steer.New(ctx, steer.Config{Front: fp, Backend: netip.AddrPortFrom(a.Unmap(), uint16(port)), Logger: rt.logger})
		if err == nil {
			return s, ""
		}
		if errors.Is(err, steer.ErrUnsupported) {
			return nil, err.Error()
		}
		whys = append(whys, err)
	}
	return nil, errors.Join(whys...).Error()
}

// closeSteering stops steering: from now on :443 is only the front door.
func (rt *runtime) closeSteering() {
	if old, _ := rt.steer.gate.Swap(nil); old != nil {
		old.Close()
	}
	rt.steer.key = ""
}
