package llama

// #include "llama.h"
import "C"

import (
	"errors"
	"fmt"
	"math"
)

// SamplerParams chooses how the next token is picked. The zero value is greedy.
type SamplerParams struct {
	Temperature      float32 // <= 0: greedy
	TopK             int     // 0: off
	TopP             float32 // 0 or 1: off
	MinP             float32 // 0: off
	RepeatPenalty    float32 // 1 or 0: off
	FrequencyPenalty float32
	PresencePenalty  float32
	PenaltyLastN     int    // tokens the penalties look back over (0: 64)
	Seed             uint32 // for temperature sampling
}

// Validate reports the first out-of-range field.
func (p SamplerParams) Validate() error {
	switch {
	case math.IsNaN(float64(p.Temperature)) || p.Temperature < 0 || p.Temperature > 100:
		return fmt.Errorf("temperature %v out of range [0, 100]", p.Temperature)
	case p.TopK < 0:
		return fmt.Errorf("top_k %d is negative", p.TopK)
	case math.IsNaN(float64(p.TopP)) || p.TopP < 0 || p.TopP > 1:
		return fmt.Errorf("top_p %v out of range [0, 1]", p.TopP)
	case math.IsNaN(float64(p.MinP)) || p.MinP < 0 || p.MinP > 1:
		return fmt.Errorf("min_p %v out of range [0, 1]", p.MinP)
	case math.IsNaN(float64(p.RepeatPenalty)) || p.RepeatPenalty < 0 || p.RepeatPenalty > 10:
		return fmt.Errorf("repeat_penalty %v out of range [0, 10]", p.RepeatPenalty)
	case math.IsNaN(float64(p.FrequencyPenalty)) || p.FrequencyPenalty < -2 || p.FrequencyPenalty > 2:
		return fmt.Errorf("frequency_penalty %v out of range [-2, 2]", p.FrequencyPenalty)
	case math.IsNaN(float64(p.PresencePenalty)) || p.PresencePenalty < -2 || p.PresencePenalty > 2:
		return fmt.Errorf("presence_penalty %v out of range [-2, 2]", p.PresencePenalty)
	case p.PenaltyLastN < 0:
		return errors.New("penalty_last_n is negative")
	}
	return nil
}

// Sampler is a llama.cpp sampler chain. Not safe for concurrent use.
type Sampler struct {
	c *C.struct_llama_sampler
}

// NewSampler builds the chain: penalties, top-k, top-p, min-p, temperature, then a
// seeded draw (or greedy when the temperature is 0).
func NewSampler(p SamplerParams) (*Sampler, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	cp := C.llama_sampler_chain_default_params()
	cp.no_perf = true
	ch := C.llama_sampler_chain_init(cp)
	add := func(s *C.struct_llama_sampler) { C.llama_sampler_chain_add(ch, s) }
	rep := p.RepeatPenalty
	if rep == 0 {
		rep = 1
	}
	if rep != 1 || p.FrequencyPenalty != 0 || p.PresencePenalty != 0 {
		lastN := p.PenaltyLastN
		if lastN == 0 {
			lastN = 64
		}
		add(C.llama_sampler_init_penalties(C.int32_t(lastN), C.float(rep), C.float(p.FrequencyPenalty), C.float(p.PresencePenalty)))
	}
	if p.Temperature <= 0 {
		add(C.llama_sampler_init_greedy())
		return &Sampler{c: ch}, nil
	}
	if p.TopK > 0 {
		add(C.llama_sampler_init_top_k(C.int32_t(p.TopK)))
	}
	if p.TopP > 0 && p.TopP < 1 {
		add(C.llama_sampler_init_top_p(C.float(p.TopP), 1))
	}
	if p.MinP > 0 {
		add(C.llama_sampler_init_min_p(C.float(p.MinP), 1))
	}
	add(C.llama_sampler_init_temp(C.float(p.Temperature)))
	add(C.llama_sampler_init_dist(C.uint32_t(p.Seed)))
	return &Sampler{c: ch}, nil
}

// Sample picks a token from the logits of batch index i of the context's last decode and
// records it for the penalties.
func (s *Sampler) Sample(c *Context, i int) Token {
	return Token(C.llama_sampler_sample(s.c, c.c, C.int32_t(i)))
}

// Accept records a token (for example the prompt's) in the penalty history.
func (s *Sampler) Accept(t Token) { C.llama_sampler_accept(s.c, C.llama_token(t)) }

// Reset clears the penalty history.
func (s *Sampler) Reset() { C.llama_sampler_reset(s.c) }

// Close frees the sampler.
func (s *Sampler) Close() {
	if s != nil && s.c != nil {
		C.llama_sampler_free(s.c)
		s.c = nil
	}
}
