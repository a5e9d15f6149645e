package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/magicconch/conch/api"
	"github.com/magicconch/conch/internal/engine"
	"github.com/magicconch/conch/llama"
)

// serve listens first (so /healthz answers while the model loads), loads the model, and
// serves until ctx ends; then it stops accepting, lets in-flight requests finish within
// the shutdown timeout, and returns nil.
func serve(ctx context.Context, st settings, ready func(addr string)) error {
	log := newLogger(st.LogLevel)
	model, extra := st.Model, []string(nil)
	if model == "" {
		if defaultModel == nil {
			return errors.New("no --model given")
		}
		var err error
		if model, extra, err = defaultModel(); err != nil {
			return fmt.Errorf("default model: %w", err)
		}
	}
	loras := append(extra, st.Loras...)
	specs := make([]loraSpec, 0, len(loras))
	for _, l := range loras {
		s, err := parseLora(l)
		if err != nil {
			return err
		}
		if s.name == st.ModelName {
			return fmt.Errorf("--lora %s: the name %q is the base model's (--model-name)", l, s.name)
		}
		specs = append(specs, s)
	}

	srv := api.New(api.Config{
		ModelName: st.ModelName, APIKeys: st.APIKeys, MaxBody: st.MaxBody,
		DefaultMaxTokens: st.MaxTokens, CORSOrigins: st.CORSOrigins, Logger: log,
	})
	ln, err := net.Listen("tcp", net.JoinHostPort(st.Host, strconv.Itoa(st.Port)))
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	log.Info("listening", "addr", "http://"+ln.Addr().String(), "docs", "http://"+ln.Addr().String()+"/docs")
	if ready != nil {
		ready(ln.Addr().String())
	}

	eng, closeModel, err := load(ctx, model, specs, st, srv, log)
	if err != nil {
		hs.Close()
		return err
	}
	defer closeModel()
	srv.SetEngine(eng)
	log.Info("serving", "model", model, "slots", st.Parallel, "ctx", st.CtxSize, "adapters", len(specs))

	select {
	case err := <-served:
		eng.Close()
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", st.ShutdownTimeout)
	dctx, cancel := context.WithTimeout(context.Background(), st.ShutdownTimeout)
	defer cancel()
	// Shutdown closes the listener at once and waits for handlers; requests arriving on
	// kept-alive connections meanwhile are refused by the draining engine (503).
	go eng.Drain(dctx)
	if err := hs.Shutdown(dctx); err != nil {
		log.Warn("shutdown timeout: cancelling the remaining requests")
		eng.Close() // ends every stream; handlers answer and return
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		if hs.Shutdown(sctx) != nil {
			hs.Close()
		}
	}
	srv.SetEngine(nil)
	eng.Close()
	log.Info("stopped")
	return nil
}

// load loads the model and adapters and starts the engine. Loading stops early when ctx
// ends (between files: llama.cpp cannot interrupt a load).
func load(ctx context.Context, path string, specs []loraSpec, st settings, srv *api.Server, log *slog.Logger) (*engine.Engine, func(), error) {
	start := time.Now()
	m, err := llama.LoadModel(path, llama.ModelParams{GPULayers: st.GPULayers})
	if err != nil {
		return nil, nil, err
	}
	var adapters []engine.Adapter
	cleanup := func() {
		for _, a := range adapters {
			a.Adapter.Close()
		}
		m.Close()
	}
	for _, s := range specs {
		if ctx.Err() != nil {
			cleanup()
			return nil, nil, ctx.Err()
		}
		a, err := llama.LoadAdapter(m, s.path)
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("--lora %s: %w", s.name, err)
		}
		adapters = append(adapters, engine.Adapter{Name: s.name, Adapter: a, Scale: s.scale})
	}
	queue := st.Queue
	if queue == 0 {
		queue = -1 // engine.Config reads 0 as "the default"; --queue 0 means nobody waits
	}
	eng, err := engine.New(engine.Config{
		Model: m, Adapters: adapters, Parallel: st.Parallel, SlotCtx: st.CtxSize, BatchSize: st.BatchSize,
		PrefillChunk: st.PrefillChunk, Threads: st.Threads, Queue: queue, FlashAttn: st.FlashAttn, Logger: log,
		OnFirstToken: srv.ObserveFirstToken, OnToken: srv.ObserveToken, OnStep: srv.ObserveStep,
	})
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	device := "cpu"
	if gpus := llama.GPUs(); len(gpus) > 0 && st.GPULayers != 0 {
		device = gpus[0].Name
	}
	log.Info("model loaded", "model", m.Desc(), "device", device, "seconds", time.Since(start).Seconds())
	return eng, cleanup, nil
}

type loraSpec struct {
	name, path string
	scale      float32
}

// parseLora reads NAME=PATH[:SCALE]; without NAME= the file name (less .gguf) names it.
func parseLora(s string) (loraSpec, error) {
	spec := loraSpec{scale: 1}
	rest := s
	if name, p, ok := strings.Cut(s, "="); ok {
		spec.name, rest = name, p
	}
	if i := strings.LastIndexByte(rest, ':'); i > 0 {
		if f, err := strconv.ParseFloat(rest[i+1:], 32); err == nil {
			rest, spec.scale = rest[:i], float32(f)
		}
	}
	spec.path = rest
	if spec.name == "" {
		spec.name = strings.TrimSuffix(filepath.Base(rest), ".gguf")
	}
	if spec.path == "" || spec.name == "" {
		return spec, fmt.Errorf("--lora %q: want NAME=PATH[:SCALE]", s)
	}
	return spec, nil
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
