package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/magicconch/conch/llama"
)

// parseLoraSpec splits PATH[:SCALE].
func parseLoraSpec(spec string) (string, float32, error) {
	if i := strings.LastIndexByte(spec, ':'); i > 0 {
		if s, err := strconv.ParseFloat(spec[i+1:], 32); err == nil {
			return spec[:i], float32(s), nil
		}
	}
	if spec == "" {
		return "", 0, fmt.Errorf("empty --lora")
	}
	return spec, 1, nil
}

// renderChat renders a chat with the model's own template.
func renderChat(m *llama.Model, msgs []llama.Message) (string, error) {
	return m.ApplyChatTemplate("", msgs, true)
}
