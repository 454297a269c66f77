package cluster

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"time"
)

// published is a challenge as stored under ClusterChallengeKey: the certificate the CA must
// be shown and its throwaway key (the challenge's own, never the account key), which the
// storage seals when it has an encryption key.
type published struct {
	// ID is random per Publish, so that an acknowledgement of an earlier challenge for the
	// same name is never taken for one of this.
	ID         string   `json:"id"`
	ServerName string   `json:"server_name"`
	Publisher  string   `json:"publisher"` // node id, or a description of a command
	Chain      [][]byte `json:"chain"`     // DER, leaf first
	Key        []byte   `json:"key"`       // PKCS #8 DER
}

// ack is a node's acknowledgement (under ClusterAckKey) or "served" mark (ClusterServedKey).
type ack struct {
	ID string `json:"id"`
	// Leaf is the SHA-256 of the leaf the node loaded: the node holds exactly what was
	// published.
	Leaf string `json:"leaf"`
	// Served counts the validation handshakes served (in a "served" mark), so that each one
	// changes the key.
	Served int       `json:"served,omitempty"`
	At     time.Time `json:"at"`
}

func encodePublished(id, serverName, publisher string, cert *tls.Certificate) ([]byte, error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("no certificate")
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("the challenge certificate's key is a %T, not a crypto.Signer", cert.PrivateKey)
	}
	key, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, fmt.Errorf("encoding the challenge certificate's key: %w", err)
	}
	return json.Marshal(published{ID: id, ServerName: serverName, Publisher: publisher, Chain: cert.Certificate, Key: key})
}

func decodePublished(b []byte) (*published, *tls.Certificate, error) {
	var p published
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, nil, err
	}
	if p.ID == "" || p.ServerName == "" || len(p.Chain) == 0 || len(p.Key) == 0 {
		return nil, nil, errors.New("incomplete challenge record")
	}
	key, err := x509.ParsePKCS8PrivateKey(p.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("challenge key: %w", err)
	}
	leaf, err := x509.ParseCertificate(p.Chain[0])
	if err != nil {
		return nil, nil, fmt.Errorf("challenge certificate: %w", err)
	}
	return &p, &tls.Certificate{Certificate: p.Chain, PrivateKey: key, Leaf: leaf}, nil
}

func leafHash(cert *tls.Certificate) string {
	sum := sha256.Sum256(cert.Certificate[0])
	return hex.EncodeToString(sum[:])
}

func decodeAck(b []byte) (ack, error) {
	var a ack
	err := json.Unmarshal(b, &a)
	return a, err
}

func parseLeaf(der []byte) (*x509.Certificate, error) { return x509.ParseCertificate(der) }

func pathBase(key string) string { return path.Base(key) }
