package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/magicconch/conch/internal/outfile"
	"github.com/magicconch/conch/llama"
)

// interruptible returns a context the first Ctrl-C (or SIGTERM) cancels: the command
// stops at its next safe point and removes its partial output. Native work that cannot
// stop early (llama.cpp's K-quant quantiser) may take a while to get there, so a second
// Ctrl-C removes the partial outputs and exits at once.
func interruptible() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-sigs; !ok {
			return
		}
		fmt.Fprintln(os.Stderr, "\nconch: stopping; press Ctrl-C again to quit at once")
		cancel()
		if _, ok := <-sigs; !ok {
			return
		}
		outfile.RemovePending()
		fmt.Fprintln(os.Stderr, "conch: interrupted; partial output removed")
		os.Exit(130)
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(sigs)
		cancel()
	}
}

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
