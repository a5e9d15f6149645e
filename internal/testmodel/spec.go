package testmodel

import (
	"errors"
	"fmt"
)

// Spec describes a random model. Zero fields take the defaults listed; the same Spec
// always produces a byte-identical file.
type Spec struct {
	Name    string // general.name (default "conch-testmodel-<arch>")
	Arch    string // "llama", "qwen2" or "qwen3"
	Vocab   string // "qwen2" (default for qwen archs), "deepseek-r1-qwen", "llama-spm" (default for llama) or another tokenizers/vocab-gguf name
	NEmbd   int    // hidden size
	NLayer  int    // blocks
	NHead   int    // attention heads
	NHeadKV int    // key/value heads (GQA; default NHead)
	HeadDim int    // per-head size (default NEmbd/NHead; qwen2 requires that)
	NFF     int    // feed-forward size (default 4*NEmbd)
	NCtx    int    // training context length (default 512)
	Tied    bool   // output head shares token_embd (no output.weight)
	Type    string // "f32" (default) or "f16" for the matrices; norms and biases are always f32
	// RopeTheta defaults to 10000 for llama and 1e6 for qwen; Eps (RMSNorm) to 1e-5 for
	// llama and 1e-6 for qwen.
	RopeTheta float32
	Eps       float32
	Seed      uint64
	// ChatTemplate is written as tokenizer.chat_template. Empty takes the vocabulary's
	// default (Qwen2.5-Instruct for qwen2, DeepSeek-R1 for deepseek-r1-qwen, none for
	// llama-spm); NoChatTemplate writes none at all.
	ChatTemplate   string
	NoChatTemplate bool
}

// Tiny returns a small preset for tests: "llama" (llama-spm vocabulary, untied, about
// 17 MB), "qwen2" (Qwen2.5 vocabulary, tied, q/k/v biases, about 25 MB) or "qwen3"
// (tied, qk-norm, head size 16 with n_embd/n_head = 8, about 25 MB). Unknown names panic:
// presets are fixed at compile time.
func Tiny(arch string) Spec {
	switch arch {
	case "llama":
		return Spec{Name: "tiny-llama", Arch: "llama", NEmbd: 64, NLayer: 2, NHead: 4, NHeadKV: 2, NFF: 128, NCtx: 512, Seed: 1}
	case "qwen2":
		// n_embd 32: the 151936-row embedding dominates the size.
		return Spec{Name: "tiny-qwen2", Arch: "qwen2", NEmbd: 32, NLayer: 2, NHead: 4, NHeadKV: 2, NFF: 64, NCtx: 512, Tied: true, Seed: 1}
	case "qwen3":
		return Spec{Name: "tiny-qwen3", Arch: "qwen3", NEmbd: 32, NLayer: 2, NHead: 4, NHeadKV: 2, HeadDim: 16, NFF: 64, NCtx: 512, Tied: true, Seed: 1}
	}
	panic("testmodel.Tiny: unknown arch " + arch)
}

// Qwen25_05B has the shapes of Qwen2.5-0.5B-Instruct (shared/data/models/configs): for
// benchmarks, written by the mkmodel command only (about 2 GB in f32).
func Qwen25_05B() Spec {
	return Spec{Name: "random-qwen2.5-0.5b", Arch: "qwen2", Vocab: VocabQwen2, NEmbd: 896, NLayer: 24, NHead: 14, NHeadKV: 2,
		NFF: 4864, NCtx: 32768, Tied: true, RopeTheta: 1e6, Eps: 1e-6, Seed: 1}
}

// DeepSeekR1Qwen15B has the shapes of DeepSeek-R1-Distill-Qwen-1.5B (untied, rope base
// 10000, its own added tokens and chat template): about 7 GB in f32.
func DeepSeekR1Qwen15B() Spec {
	return Spec{Name: "random-deepseek-r1-distill-qwen-1.5b", Arch: "qwen2", Vocab: VocabDeepSeekR1Qwen, NEmbd: 1536, NLayer: 28,
		NHead: 12, NHeadKV: 2, NFF: 8960, NCtx: 131072, Tied: false, RopeTheta: 10000, Eps: 1e-6, Seed: 1}
}

// Resolved returns s with every default filled in, and an error if llama.cpp could not
// load the result (checked here so that no bad Spec reaches a native assertion).
func (s Spec) Resolved() (Spec, error) {
	qwen := s.Arch == "qwen2" || s.Arch == "qwen3"
	if s.Arch != "llama" && !qwen {
		return s, fmt.Errorf("testmodel: unsupported arch %q (llama, qwen2, qwen3)", s.Arch)
	}
	if s.Name == "" {
		s.Name = "conch-testmodel-" + s.Arch
	}
	if s.Vocab == "" {
		s.Vocab = VocabLlamaSPM
		if qwen {
			s.Vocab = VocabQwen2
		}
	}
	if s.NHeadKV == 0 {
		s.NHeadKV = s.NHead
	}
	if s.NHead > 0 && s.HeadDim == 0 {
		s.HeadDim = s.NEmbd / s.NHead
	}
	if s.NFF == 0 {
		s.NFF = 4 * s.NEmbd
	}
	if s.NCtx == 0 {
		s.NCtx = 512
	}
	if s.Type == "" {
		s.Type = "f32"
	}
	if s.RopeTheta == 0 {
		s.RopeTheta = 10000
		if qwen {
			s.RopeTheta = 1e6
		}
	}
	if s.Eps == 0 {
		s.Eps = 1e-5
		if qwen {
			s.Eps = 1e-6
		}
	}
	switch {
	case s.NEmbd <= 0 || s.NLayer <= 0 || s.NHead <= 0 || s.NFF <= 0 || s.NCtx <= 0 || s.HeadDim <= 0:
		return s, errors.New("testmodel: NEmbd, NLayer, NHead, NFF, NCtx and HeadDim must be positive")
	case s.NEmbd > 1<<16 || s.NLayer > 256 || s.NHead > 1024 || s.NFF > 1<<18 || s.NCtx > 1<<20:
		return s, errors.New("testmodel: dimensions too large")
	case s.NHeadKV <= 0 || s.NHead%s.NHeadKV != 0:
		return s, fmt.Errorf("testmodel: NHead %d is not a multiple of NHeadKV %d", s.NHead, s.NHeadKV)
	case s.HeadDim%2 != 0:
		return s, fmt.Errorf("testmodel: head size %d must be even for RoPE", s.HeadDim)
	case s.Arch == "qwen2" && s.HeadDim*s.NHead != s.NEmbd:
		return s, fmt.Errorf("testmodel: qwen2 needs NEmbd (%d) = NHead (%d) x head size (%d)", s.NEmbd, s.NHead, s.HeadDim)
	case s.Type != "f32" && s.Type != "f16":
		return s, fmt.Errorf("testmodel: type %q (want f32 or f16)", s.Type)
	case s.Eps < 0 || s.RopeTheta < 0:
		return s, errors.New("testmodel: negative Eps or RopeTheta")
	}
	return s, nil
}
