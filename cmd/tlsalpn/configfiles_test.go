package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/config"
)

// TestCheckConfigFilesStorage: the files the storage section names are
// checked when the configuration is loaded, so a missing key file stops
// serve at start (and a reload) naming the key, not at the first write.
func TestCheckConfigFilesStorage(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "storage.key")
	if err := os.WriteFile(key, make([]byte, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name    string
		storage config.Storage
		want    string // "" for no error
	}{
		{"directory", config.Storage{Location: dir}, ""},
		{"etcd, files present", config.Storage{Location: "etcd://127.0.0.1:2379/t", EncryptionKeyFile: key}, ""},
		{"encryption key missing", config.Storage{Location: "etcd://127.0.0.1:2379/t", EncryptionKeyFile: missing}, "storage.encryption_key_file: "},
		{"etcd CA missing", config.Storage{Location: "etcd://127.0.0.1:2379/t", EncryptionKeyFile: key, EtcdCA: missing}, "storage.etcd_ca: "},
		{"password file missing", config.Storage{Location: "etcd://127.0.0.1:2379/t", EncryptionKeyFile: key, EtcdUser: "u", EtcdPasswordFile: missing}, "storage.etcd_password_file: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{Storage: tc.storage}
			cfg.SetDefaults()
			err := checkConfigFiles(cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, fs.ErrNotExist)):
				t.Fatalf("got %v, want %s... wrapping fs.ErrNotExist", err, tc.want)
			}
		})
	}
}
