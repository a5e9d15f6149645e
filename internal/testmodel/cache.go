package testmodel

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// generatorVersion changes whenever the bytes Write produces for a Spec change, so that
// cached files from an older generator are never reused.
const generatorVersion = 1

// EnvCacheDir overrides where Cached keeps models (default $TMPDIR/conch-testmodels).
const EnvCacheDir = "CONCH_TESTMODEL_DIR"

var cached sync.Map // file path -> func() error

// CacheDir is the folder Cached writes into.
func CacheDir() string {
	if d := os.Getenv(EnvCacheDir); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "conch-testmodels")
}

// Path is where Cached keeps the model for s: the name holds a hash of the resolved
// spec and the generator version.
func Path(s Spec) (string, error) {
	r, err := s.Resolved()
	if err != nil {
		return "", err
	}
	b, _ := json.Marshal(struct {
		V int
		S Spec
	}{generatorVersion, r})
	sum := sha256.Sum256(b)
	return filepath.Join(CacheDir(), fileSafe(r.Name)+"-"+hex.EncodeToString(sum[:8])+".gguf"), nil
}

// Cached returns the path of the model for s, writing it on first use. Files persist in
// CacheDir between runs (the writes are atomic, so parallel test processes are safe) and
// are reused while the spec and generator are unchanged. It fails t on any error.
func Cached(t testing.TB, s Spec) string {
	t.Helper()
	p, err := Ensure(s)
	if err != nil {
		t.Fatalf("testmodel: %v", err)
	}
	return p
}

// Ensure is Cached without a testing.TB: it returns the cached model's path, writing the
// file if it does not exist yet.
func Ensure(s Spec) (string, error) {
	p, err := Path(s)
	if err != nil {
		return "", err
	}
	f, _ := cached.LoadOrStore(p, sync.OnceValue(func() error {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
		return Write(p, s)
	}))
	return p, f.(func() error)()
}

// fileSafe keeps a model name usable as part of a file name.
func fileSafe(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}
