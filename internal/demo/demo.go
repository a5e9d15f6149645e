// Package demo holds Conch's built-in demo: a tiny real pretrained base model
// (stories260K, MIT, see assets/stories260K.LICENSE), the magic-conch dataset, and a
// LoRA adapter that Conch itself trained on that dataset (scripts/train-demo-adapter).
// conchd serves it when started without --model; `conch demo` fine-tunes it live.
package demo

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/magicconch/conch/llama"
)

//go:embed assets
var assets embed.FS

// File names inside the materialised demo folder.
const (
	BaseFile    = "stories260K.gguf"
	AdapterFile = "magic_conch-adapter.gguf"
	DatasetName = "magic_conch"
)

// Files returns the embedded assets (base model, license, dataset, adapter).
func Files() fs.FS {
	sub, _ := fs.Sub(assets, "assets")
	return sub
}

// HasAdapter reports whether the trained demo adapter is built in.
func HasAdapter() bool {
	_, err := fs.Stat(Files(), AdapterFile)
	return err == nil
}

// Materialize writes the embedded files (llama.cpp loads models from paths) into a
// folder under the user's cache keyed by their content, reusing it when it is already
// complete, and returns the paths of the base model and the adapter ("" if none).
func Materialize() (base, adapter string, err error) {
	h := sha256.New()
	err = fs.WalkDir(Files(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Files(), p)
		h.Write([]byte(p))
		h.Write(b)
		return err
	})
	if err != nil {
		return "", "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "conch", "demo-"+hex.EncodeToString(h.Sum(nil))[:12])
	if err := Extract(dir); err != nil {
		return "", "", err
	}
	base = filepath.Join(dir, BaseFile)
	if HasAdapter() {
		adapter = filepath.Join(dir, AdapterFile)
	}
	return base, adapter, nil
}

// Extract copies every embedded file into dir (created if needed). Files already there
// with the right size are kept; others are written to a temporary name and renamed.
func Extract(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return fs.WalkDir(Files(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Files(), p)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, p)
		if st, err := os.Stat(dst); err == nil && st.Size() == int64(len(b)) {
			return nil
		}
		tmp := dst + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		return os.Rename(tmp, dst)
	})
}

// WriteDataset writes the magic-conch dataset and its dataset_info.json into dir, as a
// LLaMA-Factory user would have them.
func WriteDataset(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"dataset_info.json", "magic_conch.json", "magic_conch_messages.json"} {
		b, err := fs.ReadFile(Files(), name)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ServedModel is the built-in demo as one model file, for conchd and conch chat without a
// model: the base with the trained adapter merged in (F32), written once into the
// user's cache beside the extracted files.
func ServedModel() (string, error) {
	base, adapter, err := Materialize()
	if err != nil || adapter == "" {
		return base, err
	}
	merged := filepath.Join(filepath.Dir(base), "magic_conch-merged.gguf")
	if _, err := os.Stat(merged); err == nil {
		return merged, nil
	}
	_, err = llama.Merge(context.Background(), llama.MergeParams{Base: base, Output: merged, Type: "f32",
		LoRAs: []llama.MergeLoRA{{Path: adapter, Scale: 1}}})
	if err != nil {
		return "", err
	}
	return merged, nil
}
