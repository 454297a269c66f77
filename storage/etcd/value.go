package etcd

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"time"
)

// Every value is stored with a small header:
//
//	"TLA1"            magic and format version (4 bytes)
//	kind              'p' plain or 's' sealed (1 byte)
//	modified          Unix time in nanoseconds, big-endian (8 bytes): Stat's Modified
//	mode              the permission bits given to Put, big-endian (2 bytes): see Mode
//	plain:  the value
//	sealed: key id (8 bytes), nonce (12 bytes), AES-256-GCM ciphertext and tag
//
// A sealed value's additional data is its header up to and including the key id, followed by
// its storage key: a value cannot be moved to another key, nor its time altered, unnoticed.
const (
	magic        = "TLA1"
	kindPlain    = 'p'
	kindSealed   = 's'
	timeEnd      = len(magic) + 1 + 8
	headerLen    = timeEnd + 2
	keyIDLen     = 8
	nonceLen     = 12
	tagLen       = 16
	sealedPrefix = headerLen + keyIDLen // what the additional data covers of the header
)

// sealer encrypts and decrypts values under one key.
type sealer struct {
	aead cipher.AEAD
	id   [keyIDLen]byte
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("storage/etcd: encryption key has %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s := &sealer{aead: aead}
	sum := sha256.Sum256(key)
	copy(s.id[:], sum[:keyIDLen])
	return s, nil
}

// KeyID returns the id of an encryption key as stored beside each value it sealed: the first 8
// bytes of its SHA-256, in hex. It names the key in logs and errors without revealing it.
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:keyIDLen])
}

func header(k byte, mod time.Time, mode os.FileMode) []byte {
	b := make([]byte, headerLen, headerLen+64)
	copy(b, magic)
	b[len(magic)] = k
	binary.BigEndian.PutUint64(b[len(magic)+1:], uint64(mod.UnixNano()))
	binary.BigEndian.PutUint16(b[timeEnd:], uint16(mode.Perm()))
	return b
}

// encodePlain returns value with a plain header.
func encodePlain(value []byte, mod time.Time, mode os.FileMode) []byte {
	return append(header(kindPlain, mod, mode), value...)
}

// seal returns value sealed for storage key.
func (s *sealer) seal(key string, value []byte, mod time.Time, mode os.FileMode) ([]byte, error) {
	b := header(kindSealed, mod, mode)
	b = append(b, s.id[:]...)
	nonce := make([]byte, nonceLen)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	ad := append(b[:sealedPrefix:sealedPrefix], key...)
	out := make([]byte, 0, sealedPrefix+nonceLen+len(value)+tagLen)
	out = append(out, b...)
	out = append(out, nonce...)
	return s.aead.Seal(out, nonce, value, ad), nil
}

// decoded is a stored value taken apart.
type decoded struct {
	sealed   bool
	modified time.Time
	mode     os.FileMode
	size     int64
	keyID    []byte // sealed only
	body     []byte // plain: the value; sealed: nonce, ciphertext and tag
	raw      []byte
}

func decode(raw []byte) (decoded, error) {
	if len(raw) < headerLen || string(raw[:len(magic)]) != magic {
		return decoded{}, fmt.Errorf("%w: no %q header", ErrCorrupt, magic)
	}
	d := decoded{raw: raw}
	d.modified = time.Unix(0, int64(binary.BigEndian.Uint64(raw[len(magic)+1:timeEnd])))
	d.mode = os.FileMode(binary.BigEndian.Uint16(raw[timeEnd:headerLen])) & os.ModePerm
	switch raw[len(magic)] {
	case kindPlain:
		d.body = raw[headerLen:]
		d.size = int64(len(d.body))
	case kindSealed:
		if len(raw) < sealedPrefix+nonceLen+tagLen {
			return decoded{}, fmt.Errorf("%w: sealed value truncated", ErrCorrupt)
		}
		d.sealed = true
		d.keyID = raw[headerLen:sealedPrefix]
		d.body = raw[sealedPrefix:]
		d.size = int64(len(d.body) - nonceLen - tagLen)
	default:
		return decoded{}, fmt.Errorf("%w: unknown kind %q", ErrCorrupt, raw[len(magic)])
	}
	return d, nil
}

// open returns the plaintext of a sealed value stored under key.
func (s *sealer) open(key string, d decoded) ([]byte, error) {
	if string(d.keyID) != string(s.id[:]) {
		return nil, fmt.Errorf("%w: sealed with key id %x, this store has key id %x", ErrWrongKey, d.keyID, s.id)
	}
	ad := append(d.raw[:sealedPrefix:sealedPrefix], key...)
	nonce, ct := d.body[:nonceLen], d.body[nonceLen:]
	pt, err := s.aead.Open(nil, nonce, ct, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed (altered, or moved from another key)", ErrCorrupt)
	}
	return pt, nil
}
