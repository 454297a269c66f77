package metrics

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Admin is the admin API, served with the metrics on the admin listener:
//
//	GET  /metrics          Prometheus metrics
//	GET  /healthz          200 while the process serves at all
//	GET  /readyz           200 once the certificates are loaded and the front door listens, else 503 and why
//	GET  /status           JSON Status
//	POST /renew?name=NAME  renew the certificate NAME now (as "tlsalpn renew --force --cert-name NAME")
//
// With a Token, every request must carry "Authorization: Bearer TOKEN";
// without one, the listener must be on loopback (CheckAddr).
type Admin struct {
	Metrics *Metrics
	// Status reads the daemon's state (GET /status, and the metrics).
	Status StatusFunc
	// Ready returns nil once serve can do its work, or what it waits for.
	Ready func() error
	// Renew renews the certificate name now and returns what became of
	// it; ErrUnknownCertificate when serve keeps no such certificate.
	Renew func(ctx context.Context, name string) (*RenewResult, error)
	// Token, when not empty, is required as a bearer token.
	Token  string
	Logger *slog.Logger
	// RenewTimeout bounds POST /renew; default 5 minutes.
	RenewTimeout time.Duration
}

// RenewResult is the answer of POST /renew.
type RenewResult struct {
	Name        string    `json:"name"`
	Serial      string    `json:"serial,omitempty"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	ByOther     bool      `json:"by_other,omitempty"`
	Error       string    `json:"error,omitempty"`
	DeployError string    `json:"deploy_error,omitempty"`
}

// ErrUnknownCertificate is Renew's error for a name serve does not keep.
var ErrUnknownCertificate = errors.New("no certificate of that name is kept by this serve")

// AddrError is an admin address refused before anything listens.
type AddrError struct {
	Addr string
	Err  error
}

func (e *AddrError) Error() string { return fmt.Sprintf("admin address %q: %v", e.Addr, e.Err) }
func (e *AddrError) Unwrap() error { return e.Err }

// ErrNotLoopback is why a non-loopback admin address without a token is
// refused: the API can force renewals (each one counts against the CA's
// rate limits) and tells what is kept where.
var ErrNotLoopback = errors.New("not a loopback address: anything else needs a bearer token file")

// CheckAddr refuses addr unless it is host:port with a loopback host
// (127.0.0.0/8, ::1, localhost), or a token is required. A host left
// out (":9443") or a wildcard listens everywhere, so it needs a token.
func CheckAddr(addr string, hasToken bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return &AddrError{addr, fmt.Errorf("want host:port such as 127.0.0.1:9443: %w", err)}
	}
	if port == "" {
		return &AddrError{addr, errors.New("no port: want host:port such as 127.0.0.1:9443")}
	}
	if hasToken {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
		return nil
	}
	return &AddrError{addr, ErrNotLoopback}
}

// ReadToken reads a bearer token from path: the file's content without
// surrounding white space, which must not be empty.
func ReadToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the admin token: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	switch {
	case tok == "":
		return "", fmt.Errorf("admin token file %s is empty: want one token on one line", path)
	case strings.ContainsAny(tok, " \t\r\n"):
		return "", fmt.Errorf("admin token file %s holds several words: want one token on one line", path)
	}
	return tok, nil
}

// Handler is the admin API.
func (a *Admin) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.Metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if a.Ready != nil {
			if err := a.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st, err := a.Status(r.Context())
		if err != nil {
			http.Error(w, "reading the status: "+err.Error(), http.StatusInternalServerError)
			return
		}
		a.Metrics.Fill(st)
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /renew", a.renew)
	mux.HandleFunc("/renew", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "POST")
		http.Error(w, "renew takes POST /renew?name=NAME", http.StatusMethodNotAllowed)
	})
	if a.Token == "" {
		return mux
	}
	want := []byte("Bearer " + a.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tlsalpn"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (a *Admin) renew(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		http.Error(w, "want POST /renew?name=NAME: the certificate name, as /status lists it", http.StatusBadRequest)
		return
	}
	timeout := a.RenewTimeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	if a.Logger != nil {
		a.Logger.Info("renewal requested through the admin API", "name", name, "remote", r.RemoteAddr)
	}
	res, err := a.Renew(ctx, name)
	switch {
	case errors.Is(err, ErrUnknownCertificate):
		http.Error(w, fmt.Sprintf("%q: %v", name, err), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, fmt.Sprintf("renewing %s: %v", name, err), http.StatusInternalServerError)
		return
	}
	code := http.StatusOK
	if res.Error != "" {
		code = http.StatusBadGateway // the CA (or the validation) failed
	}
	writeJSON(w, code, res)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Serve serves the admin API on ln until ctx ends.
func (a *Admin) Serve(ctx context.Context, ln net.Listener) error {
	// No WriteTimeout: POST /renew answers when the renewal is done.
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin API on %s: %w", ln.Addr(), err)
	}
	return nil
}
