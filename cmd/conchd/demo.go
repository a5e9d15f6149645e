package main

import (
	"log/slog"

	"github.com/magicconch/conch/internal/demo"
)

// Without --model, conchd serves the built-in demo: stories260K with the magic-conch
// adapter Conch trained, merged once into the user's cache.
func init() {
	defaultModel = func() (string, []string, error) {
		model, err := demo.ServedModel()
		if err != nil {
			return "", nil, err
		}
		slog.Warn("no --model given: serving the built-in demo model (stories260K + the magic-conch LoRA adapter, a few hundred KB); " +
			"serve your own with: conchd --model MODEL.gguf")
		return model, nil, nil
	}
}
