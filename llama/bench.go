package llama

// #include "llama.h"
// #include "conch.h"
import "C"

import (
	"context"
	"errors"
	"time"
	"unsafe"
)

// BenchResult is one measured run of prompt processing and generation.
type BenchResult struct {
	PromptTokens, GenTokens int
	PromptTime, GenTime     time.Duration
}

// PromptRate and GenRate are tokens per second. Generation counts the decodes after the
// first sampled token, as llama-bench does.
func (r BenchResult) PromptRate() float64 { return float64(r.PromptTokens) / r.PromptTime.Seconds() }
func (r BenchResult) GenRate() float64    { return float64(r.GenTokens-1) / r.GenTime.Seconds() }

// BenchNative runs the same prefill + greedy decode loop as BenchGo entirely in C++, as
// the reference for what the Go path costs.
func (c *Context) BenchNative(prompt []Token, nGen int) (BenchResult, error) {
	if len(prompt) == 0 || nGen < 2 || len(prompt)+nGen > c.nCtx {
		return BenchResult{}, errors.New("bench: prompt and generation must fit the context, with at least 2 generated tokens")
	}
	smp, err := NewSampler(SamplerParams{})
	if err != nil {
		return BenchResult{}, err
	}
	defer smp.Close()
	var pp, tg C.double
	rc := C.conch_bench_decode(c.c, smp.c, (*C.int32_t)(unsafe.Pointer(&prompt[0])), C.int(len(prompt)), C.int(nGen), &pp, &tg)
	if rc != 0 {
		return BenchResult{}, errors.New("bench: decode failed")
	}
	return BenchResult{len(prompt), nGen, time.Duration(float64(pp) * 1e9), time.Duration(float64(tg) * 1e9)}, nil
}

// BenchGo runs greedy generation of nGen tokens through Generate, ignoring EOS.
func (c *Context) BenchGo(prompt []Token, nGen int) (BenchResult, error) {
	if len(prompt) == 0 || nGen < 2 || len(prompt)+nGen > c.nCtx {
		return BenchResult{}, errors.New("bench: prompt and generation must fit the context, with at least 2 generated tokens")
	}
	res, err := c.generate(context.Background(), prompt, GenerateOptions{MaxTokens: nGen}, nil, true)
	if err != nil {
		return BenchResult{}, err
	}
	return BenchResult{res.PromptTokens, res.Tokens, res.PromptTime, res.GenTime}, nil
}
