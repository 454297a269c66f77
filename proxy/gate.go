package proxy

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// A connection is "waiting" from its accept until its ClientHello is
// complete. Waiting connections cost an attacker nothing but a socket, so
// they are what a flood is made of; the gate keeps them from crowding out
// everyone else in two ways:
//
//   - one source (an IPv4 address, or an IPv6 /64, which one machine
//     usually holds whole) may have at most MaxHelloWaitsPerSource of them;
//     its next connection is closed at once, before anything is read;
//   - once admitted connections reach nine tenths of MaxConns, each new
//     connection evicts the oldest waiting one. A new connection is
//     therefore refused only when every slot is held by a connection that
//     has sent its ClientHello, so the CA's validation and ordinary clients
//     still get in while slots are held by clients that say nothing.
//
// A connection whose ClientHello is complete (relayed, terminated, or an
// acme-tls/1 validation) is never evicted for this. A new connection has
// the time the next 0.9*MaxConns connections take to arrive to send its
// hello (7,200 at the default): at 10,000 new connections a second from
// many sources, 0.7 s, a few round trips from anywhere.
type gate struct {
	mu   sync.Mutex
	live int // admitted and neither released nor evicted
	// perSource counts waiting connections by source; a source with none
	// has no entry, so the map is no larger than the waiting list.
	perSource  map[netip.Addr]int
	head, tail *waiter // the waiting connections, oldest first

	refusedSource atomic.Int64 // closed at once: their source had too many waiting
	refusedFull   atomic.Int64 // closed at once: every slot held by a connection past its hello
	evicted       atomic.Int64 // waiting connections closed to make room
}

// evictAt is how many admitted connections (nine tenths of maxConns) make
// each new one evict the oldest waiting one. Below it nothing is evicted,
// so an ordinary burst never costs a slow client its connection; above it
// waiting connections no longer grow in number, and the last tenth is kept
// for connections that have sent their hello.
func evictAt(maxConns int) int { return maxConns - maxConns/10 }

// A waiter is one admitted connection, as the gate knows it.
type waiter struct {
	conn       gated
	src        netip.Addr // the source it is counted under; invalid when exempt
	prev, next *waiter
	state      waiterState
}

// gated is what the gate needs of a connection: to close it, and its
// address for the log. A net.Conn is one; so is a connection of the loops.
type gated interface {
	Close() error
	RemoteAddr() net.Addr
}

type waiterState uint8

const (
	waiting  waiterState = iota // ClientHello not yet complete: in the list
	ready                       // ClientHello complete: never evicted
	evicted                     // closed by the gate; its slot is free already
	released                    // gone
)

// verdict says why admit closed a connection.
type verdict uint8

const (
	admitted     verdict = iota
	sourceIsFull         // its source has its share of waiting connections
	allFull              // every slot is held by a connection past its hello
)

// admit decides on a new connection from src (invalid: not counted per
// source, as for a trusted proxy, which speaks for many clients). An
// admitted connection gets a waiter, to be passed to hello when its
// ClientHello is complete and to release when it ends. victim, when not
// nil, is a waiting connection admit evicted to make room: the caller
// closes it, outside the gate's lock.
func (g *gate) admit(c gated, src netip.Addr, maxConns, perSource int) (w *waiter, victim *waiter, v verdict) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if src.IsValid() && g.perSource[src] >= perSource {
		g.refusedSource.Add(1)
		return nil, nil, sourceIsFull
	}
	if g.live >= evictAt(maxConns) && g.head != nil {
		victim = g.head
		g.unlist(victim)
		victim.state = evicted
		g.live--
		g.evicted.Add(1)
	}
	if g.live >= maxConns {
		g.refusedFull.Add(1)
		return nil, victim, allFull
	}
	w = &waiter{conn: c, src: src, prev: g.tail}
	if g.tail != nil {
		g.tail.next = w
	} else {
		g.head = w
	}
	g.tail = w
	if src.IsValid() {
		if g.perSource == nil {
			g.perSource = map[netip.Addr]int{}
		}
		g.perSource[src]++
	}
	g.live++
	return w, victim, admitted
}

// move counts the waiting w under src from now on: a trusted proxy's
// PROXY header has named the client it speaks for, and that client gets
// the same share as one that connects directly. It reports false, leaving
// w as it was, when src has its share already, or when the gate has
// evicted w.
func (g *gate) move(w *waiter, src netip.Addr, perSource int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.state != waiting {
		return w.state == ready
	}
	if !src.IsValid() || src == w.src {
		return true
	}
	if g.perSource[src] >= perSource {
		g.refusedSource.Add(1)
		return false
	}
	g.uncount(w)
	w.src = src
	if g.perSource == nil {
		g.perSource = map[netip.Addr]int{}
	}
	g.perSource[src]++
	return true
}

// hello records that w's ClientHello is complete. It reports false when
// the gate has evicted w already (its connection is closed).
func (g *gate) hello(w *waiter) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.state != waiting {
		return w.state == ready
	}
	g.unlist(w)
	w.state = ready
	return true
}

// release frees w's slot when its connection ends.
func (g *gate) release(w *waiter) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch w.state {
	case waiting:
		g.unlist(w)
		g.live--
	case ready:
		g.live--
	}
	w.state = released
}

// unlist takes a waiting w off the list and its source's count.
func (g *gate) unlist(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		g.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		g.tail = w.prev
	}
	w.prev, w.next = nil, nil
	g.uncount(w)
}

// uncount takes a waiting w off its source's count.
func (g *gate) uncount(w *waiter) {
	if !w.src.IsValid() {
		return
	}
	if n := g.perSource[w.src] - 1; n > 0 {
		g.perSource[w.src] = n
	} else {
		delete(g.perSource, w.src)
	}
}

// sourceOf is the key a connection from addr is counted under: its IPv4
// address, or its IPv6 /64 (a single host is routinely given a whole /64,
// so counting addresses would let it open billions). The zero Addr for
// anything else: a listener whose peers have no IP address is not limited
// per source.
func sourceOf(addr net.Addr) netip.Addr {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Addr{}
	}
	return sourceIP(ip)
}

// sourceIP is sourceOf for an address as it is.
func sourceIP(ip netip.Addr) netip.Addr {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, err := ip.Prefix(64)
		if err != nil {
			return netip.Addr{}
		}
		return p.Addr()
	}
	return ip
}

// logEvery lets one message through per interval, so that under a flood
// the log does not become the next thing to fall over.
type logEvery struct{ last atomic.Int64 } // unix nanoseconds

func (l *logEvery) allow(interval time.Duration) bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	return now-last >= int64(interval) && l.last.CompareAndSwap(last, now)
}
