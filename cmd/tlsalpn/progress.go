package main

import (
	"fmt"
	"io"
	"sync"

	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/issuer"
)

// progress is the one line a long operation redraws on a terminal's
// stderr: what it is doing and how far it is ("[2/5 names validated]
// validating c.example"). On anything but a terminal it is nil and shows
// nothing: a log or a pipe gets the results, not the redraws.
type progress struct {
	w     io.Writer
	unit  string // what is counted, e.g. "names validated"
	total int

	mu    sync.Mutex
	done  int
	doing string
	shown bool
}

// newProgress returns the progress line of an operation over total items
// counted as unit, or nil when stderr is not a terminal.
func newProgress(e *env, unit string, total int) *progress {
	if !isTerminal(e.stderr) {
		return nil
	}
	return &progress{w: e.stderr, unit: unit, total: total}
}

// update records what is being done now and whether one more item is
// done, and redraws the line.
func (p *progress) update(doing string, finished bool) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if finished && p.done < p.total {
		p.done++
	}
	if doing != "" {
		p.doing = doing
	}
	p.draw()
	p.shown = true
}

// draw writes the line; p.mu is held.
func (p *progress) draw() {
	// \r and "erase to the end of the line" (ECMA-48 EL): the line is
	// rewritten in place.
	fmt.Fprintf(p.w, "\r\x1b[K[%d/%d %s] %s", p.done, p.total, p.unit, p.doing)
}

// above returns a writer for w whose writes (log lines) appear above the
// progress line: the line is erased, the text written, the line redrawn.
func (p *progress) above(w io.Writer) io.Writer {
	if p == nil {
		return w
	}
	return aboveWriter{p, w}
}

type aboveWriter struct {
	p *progress
	w io.Writer
}

func (a aboveWriter) Write(b []byte) (int, error) {
	p := a.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(a.w, "\r\x1b[K")
	}
	n, err := a.w.Write(b)
	if p.shown {
		p.draw()
	}
	return n, err
}

// clear erases the line, before the results are printed.
func (p *progress) clear() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}

// issueStep follows an issuance's ACME steps: a name counts when its
// authorization is valid.
func (p *progress) issueStep(s issuer.Step) {
	switch s.Kind {
	case issuer.StepAccount:
		p.update("account", false)
	case issuer.StepOrder:
		p.update("ordering", false)
	case issuer.StepChallenge:
		p.update("validating "+s.Identifier, false)
	case issuer.StepValid:
		p.update(s.Identifier+" valid", true)
	case issuer.StepFinalize:
		p.update("finalizing", false)
	case issuer.StepCertificate:
		p.update("certificate downloaded", false)
	}
}

// checked counts a target of check.
func (p *progress) checked(t check.Target) {
	p.update("checked "+t.ID.Value, true)
}
