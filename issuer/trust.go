package issuer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"
)

// ErrNoRootCertificate is returned, wrapped, by RootPool and HTTPClient
// for a CA root file that holds no PEM certificate: trusting nothing more
// than the system would be a silent default.
var ErrNoRootCertificate = errors.New("holds no PEM certificate")

// RootPool is the system roots plus the PEM roots in file: a private or
// test CA's, which the system does not trust.
func RootPool(file string) (*x509.CertPool, error) {
	pemData, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA roots: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("CA roots %s: %w", file, ErrNoRootCertificate)
	}
	return pool, nil
}

// HTTPClient is the client for talking to a CA: it trusts the system
// roots plus, when caRoot is given, the PEM roots in that file.
func HTTPClient(caRoot string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caRoot != "" {
		pool, err := RootPool(caRoot)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, nil
}
