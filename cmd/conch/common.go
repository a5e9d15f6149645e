package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

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

// modelRun is what generate and chat load: a model, a context, adapters, and how to
// sample.
type modelRun struct {
	model                       string
	loras                       []string
	ctxSize, threads, gpuLayers int
	sampler                     llama.SamplerParams
	seed                        int64
}

func (r *modelRun) addFlags(f *pflag.FlagSet, modelHelp string) {
	f.StringVarP(&r.model, "model", "m", "", modelHelp)
	f.StringArrayVar(&r.loras, "lora", nil, "LoRA adapter GGUF, optionally PATH:SCALE (repeatable)")
	f.IntVarP(&r.ctxSize, "ctx-size", "c", 4096, "context size")
	f.IntVarP(&r.threads, "threads", "t", 0, "threads (0: physical cores)")
	f.IntVar(&r.gpuLayers, "gpu-layers", -1, "layers to offload to the GPU on a CUDA build (-1: all)")
	f.Float32Var(&r.sampler.Temperature, "temp", 0, "temperature (0: greedy)")
	f.Float32Var(&r.sampler.TopP, "top-p", 0, "top-p (nucleus) sampling")
	f.IntVar(&r.sampler.TopK, "top-k", 0, "top-k sampling")
	f.Float32Var(&r.sampler.MinP, "min-p", 0, "min-p sampling")
	f.Float32Var(&r.sampler.RepeatPenalty, "repeat-penalty", 1, "repetition penalty (1: off)")
	f.Float32Var(&r.sampler.FrequencyPenalty, "frequency-penalty", 0, "frequency penalty")
	f.Float32Var(&r.sampler.PresencePenalty, "presence-penalty", 0, "presence penalty")
	f.Int64Var(&r.seed, "seed", 1, "sampling seed")
}

// open loads the model with its adapters into a new context; close frees them all.
func (r *modelRun) open() (m *llama.Model, lctx *llama.Context, close func(), err error) {
	r.sampler.Seed = uint32(r.seed)
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	close = closeAll
	defer func() {
		if err != nil { // the error returns set close to nil: free what was opened here
			closeAll()
		}
	}()
	if m, err = llama.LoadModel(r.model, llama.ModelParams{GPULayers: r.gpuLayers}); err != nil {
		return nil, nil, nil, err
	}
	closers = append(closers, m.Close)
	if lctx, err = llama.NewContext(m, llama.ContextParams{NCtx: r.ctxSize, Threads: r.threads}); err != nil {
		return nil, nil, nil, err
	}
	closers = append(closers, lctx.Close)
	for _, spec := range r.loras {
		path, scale, perr := parseLoraSpec(spec)
		if perr != nil {
			return nil, nil, nil, perr
		}
		a, aerr := llama.LoadAdapter(m, path)
		if aerr != nil {
			return nil, nil, nil, aerr
		}
		closers = append(closers, a.Close)
		if err = lctx.SetAdapter(a, scale); err != nil {
			return nil, nil, nil, err
		}
	}
	return m, lctx, close, nil
}
