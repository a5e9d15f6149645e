// Package testmodel builds small GGUF models with random weights, real architectures and
// real tokenizer vocabularies, so tests and benchmarks never download anything. The same
// Spec (seed included) always gives a byte-identical file.
package testmodel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// EnvSharedData overrides where SharedData looks (a path to the shared/data folder).
const EnvSharedData = "CONCH_SHARED_DATA"

var sharedOnce = sync.OnceValues(findSharedData)

// SharedData returns the absolute path of the project's shared/data folder: the one named
// by $CONCH_SHARED_DATA, else the first shared/data found walking up from the working
// directory (tests run in package folders; CI keeps shared/ beside or inside the clone).
func SharedData() (string, error) { return sharedOnce() }

func findSharedData() (string, error) {
	if p := os.Getenv(EnvSharedData); p != "" {
		if !isSharedData(p) {
			return "", fmt.Errorf("$%s=%s is not a shared/data folder (no tokenizers/ in it)", EnvSharedData, p)
		}
		return filepath.Abs(p)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if p := filepath.Join(dir, "shared", "data"); isSharedData(p) {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("shared/data not found above " + wd + " (set $" + EnvSharedData + ")")
}

func isSharedData(p string) bool {
	st, err := os.Stat(filepath.Join(p, "tokenizers"))
	return err == nil && st.IsDir()
}

// SharedFile returns the path of a file under shared/data and checks that it exists.
func SharedFile(rel ...string) (string, error) {
	root, err := SharedData()
	if err != nil {
		return "", err
	}
	p := filepath.Join(append([]string{root}, rel...)...)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("shared data file missing: %w", err)
	}
	return p, nil
}

// Stories260K returns the path of the real tiny llama model (karpathy's tinyllamas
// stories260K: 5 layers, dim 64, a 512-token SPM vocabulary).
func Stories260K() (string, error) {
	return SharedFile("models", "tinyllamas-stories260K", "stories260K.gguf")
}
