package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/magicconch/conch/internal/demo"
	"github.com/magicconch/conch/llama"
)

// Without --model, conchd serves the built-in demo: stories260K with the magic-conch
// adapter Conch trained, merged once into the user's cache.
func init() {
	defaultModel = func() (string, []string, error) {
		base, adapter, err := demo.Materialize()
		if err != nil {
			return "", nil, err
		}
		slog.Warn("no --model given: serving the built-in demo model (stories260K + the magic-conch LoRA adapter, a few hundred KB); " +
			"serve your own with: conchd --model MODEL.gguf")
		if adapter == "" {
			return base, nil, nil
		}
		merged := filepath.Join(filepath.Dir(base), "magic_conch-merged.gguf")
		if _, err := os.Stat(merged); err == nil {
			return merged, nil, nil
		}
		_, err = llama.Merge(context.Background(), llama.MergeParams{Base: base, Output: merged, Type: "f32",
			LoRAs: []llama.MergeLoRA{{Path: adapter, Scale: 1}}})
		if err != nil {
			return "", nil, err
		}
		return merged, nil, nil
	}
}
