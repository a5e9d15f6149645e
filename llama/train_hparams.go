package llama

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// trainTargets are the weights LoRA can train, in the bit order of conch.h: the seven
// projections of every block, then the output head (PEFT's lm_head).
var trainTargets = []struct{ name, tensor string }{
	{"q", "attn_q"}, {"k", "attn_k"}, {"v", "attn_v"}, {"o", "attn_output"},
	{"gate", "ffn_gate"}, {"up", "ffn_up"}, {"down", "ffn_down"}, {"lm_head", "output"},
}

// targetOutputBit is the lm_head target's bit; the default (no targets named) is every
// block projection without it, as LLaMA-Factory's lora_target: all.
const (
	targetOutputBit = uint32(1) << 7
	targetsDefault  = targetOutputBit - 1
)

// trainArchs maps the architectures the trainer rebuilds to conch.h's enum.
var trainArchs = map[string]int{"llama": 0, "qwen2": 1, "qwen3": 2}

// TrainableArch reports whether Conch can fine-tune models of this architecture.
func TrainableArch(arch string) bool { _, ok := trainArchs[arch]; return ok }

// trainHParams mirrors conch_train_hparams: what llama.cpp derives from the header.
type trainHParams struct {
	arch                                                 int
	nLayer, nEmbd, nFF, nHead, nHeadKV, headDim, nVocab  int
	rmsEps                                               float32
	ropeMode                                             int
	ropeFreqBase, ropeFreqScale, ropeAttnFactor, kqScale float32
	nCtxOrig                                             int
}

// headerInt reads an integer key that llama.cpp also accepts as a per-layer array, as
// long as every layer has the same value (the trainer has one shape for all layers).
func headerInt(g *GGUF, key string, def int, required bool) (int, error) {
	v, ok := g.KV[key]
	if !ok {
		if required {
			return 0, fmt.Errorf("missing metadata %s", key)
		}
		return def, nil
	}
	if arr, isArr := v.([]any); isArr {
		if len(arr) == 0 {
			return 0, fmt.Errorf("metadata %s is an empty array", key)
		}
		first := -1
		for _, e := range arr {
			n, ok := (&GGUF{KV: map[string]any{"x": e}}).Uint("x")
			if !ok {
				return 0, fmt.Errorf("metadata %s is not an integer array", key)
			}
			if first >= 0 && int(n) != first {
				return 0, fmt.Errorf("metadata %s differs between layers: not supported for training", key)
			}
			first = int(n)
		}
		return first, nil
	}
	n, ok := g.Uint(key)
	if !ok {
		return 0, fmt.Errorf("metadata %s is not a non-negative integer", key)
	}
	if n > math.MaxInt32 {
		return 0, fmt.Errorf("metadata %s is too large", key)
	}
	return int(n), nil
}

func headerFloat(g *GGUF, key string, def float64) (float64, error) {
	if _, ok := g.KV[key]; !ok {
		return def, nil
	}
	f, ok := g.Float(key)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("metadata %s is not a finite number", key)
	}
	return f, nil
}

// trainHParamsOf reads the hyperparameters the way llama.cpp's loader does for llama,
// qwen2 and qwen3, and checks every tensor the trainer will read, so that nothing
// reaches a native assertion.
func trainHParamsOf(g *GGUF) (hp trainHParams, err error) {
	arch := g.Arch()
	a, ok := trainArchs[arch]
	if !ok {
		return hp, fmt.Errorf("architecture %q cannot be fine-tuned (supported: llama, qwen2, qwen3)", arch)
	}
	if g.IsAdapter() {
		return hp, errors.New("this is a LoRA adapter, not a base model")
	}
	hp.arch = a
	p := arch + "."
	if hp.nEmbd, err = headerInt(g, p+"embedding_length", 0, true); err != nil {
		return
	}
	if hp.nLayer, err = headerInt(g, p+"block_count", 0, true); err != nil {
		return
	}
	if hp.nFF, err = headerInt(g, p+"feed_forward_length", 0, true); err != nil {
		return
	}
	if hp.nHead, err = headerInt(g, p+"attention.head_count", 0, true); err != nil {
		return
	}
	if hp.nHeadKV, err = headerInt(g, p+"attention.head_count_kv", hp.nHead, false); err != nil {
		return
	}
	if n, _ := headerInt(g, p+"expert_count", 0, false); n > 0 {
		return hp, errors.New("mixture-of-experts models cannot be fine-tuned")
	}
	if hp.nEmbd <= 0 || hp.nLayer <= 0 || hp.nFF <= 0 || hp.nHead <= 0 || hp.nHeadKV <= 0 {
		return hp, errors.New("embedding length, block count, feed-forward length and head counts must be positive")
	}
	if hp.nLayer > 1024 || hp.nEmbd > 1<<17 || hp.nFF > 1<<20 || hp.nHead > 4096 {
		return hp, errors.New("model dimensions out of range")
	}
	if hp.nHead%hp.nHeadKV != 0 {
		return hp, fmt.Errorf("head count %d is not a multiple of the key/value head count %d", hp.nHead, hp.nHeadKV)
	}
	if hp.headDim, err = headerInt(g, p+"attention.key_length", hp.nEmbd/hp.nHead, false); err != nil {
		return
	}
	vdim, err := headerInt(g, p+"attention.value_length", hp.nEmbd/hp.nHead, false)
	if err != nil {
		return
	}
	rot, err := headerInt(g, p+"rope.dimension_count", hp.headDim, false)
	if err != nil {
		return
	}
	if vdim != hp.headDim || rot != hp.headDim || hp.headDim <= 0 || hp.headDim%2 != 0 {
		return hp, fmt.Errorf("key length %d, value length %d and rope dimensions %d must be equal and even", hp.headDim, vdim, rot)
	}
	eps, err := headerFloat(g, p+"attention.layer_norm_rms_epsilon", -1)
	if err != nil {
		return
	}
	if eps < 0 {
		return hp, fmt.Errorf("missing metadata %sattention.layer_norm_rms_epsilon", p)
	}
	hp.rmsEps = float32(eps)

	// RoPE: the mode follows llama_model_rope_type; scaling as llama_context sets it up.
	hp.ropeMode = 0
	if arch != "llama" {
		hp.ropeMode = 2 // GGML_ROPE_TYPE_NEOX
	}
	base, err := headerFloat(g, p+"rope.freq_base", 10000)
	if err != nil {
		return
	}
	hp.ropeFreqBase = float32(base)
	scaling := g.String(p + "rope.scaling.type")
	if scaling == "" {
		scaling = "linear"
	}
	factor, err := headerFloat(g, p+"rope.scaling.factor", 0)
	if err != nil {
		return
	}
	if _, ok := g.KV[p+"rope.scaling.factor"]; !ok {
		if factor, err = headerFloat(g, p+"rope.scale_linear", 0); err != nil {
			return
		}
	}
	hp.ropeFreqScale = 1
	if factor != 0 {
		hp.ropeFreqScale = float32(1 / factor)
	}
	switch scaling {
	case "none":
		hp.ropeFreqScale = 1
	case "linear":
	default:
		return hp, fmt.Errorf("rope scaling %q is not supported for training (none or linear)", scaling)
	}
	attnFactor, err := headerFloat(g, p+"rope.scaling.attn_factor", 1)
	if err != nil {
		return
	}
	hp.ropeAttnFactor = float32(attnFactor)
	nCtx, err := headerInt(g, p+"context_length", 0, true)
	if err != nil {
		return
	}
	if hp.nCtxOrig, err = headerInt(g, p+"rope.scaling.original_context_length", nCtx, false); err != nil {
		return
	}
	hp.kqScale = float32(1 / math.Sqrt(float64(hp.headDim)))

	emb, ok := g.Tensor("token_embd.weight")
	if !ok || len(emb.Shape) != 2 || emb.Shape[0] != int64(hp.nEmbd) {
		return hp, errors.New("token_embd.weight is missing or does not match the embedding length")
	}
	hp.nVocab = int(emb.Shape[1])
	return hp, checkTrainTensors(g, hp)
}

// checkTrainTensors checks the shape of every tensor the trainer reads, and that ggml
// can convert its type to F32.
func checkTrainTensors(g *GGUF, hp trainHParams) error {
	d, v, ff := int64(hp.nEmbd), int64(hp.nVocab), int64(hp.nFF)
	qd, kvd := int64(hp.headDim*hp.nHead), int64(hp.headDim*hp.nHeadKV)
	need := func(name string, required bool, shape ...int64) error {
		t, ok := g.Tensor(name)
		if !ok {
			if required {
				return fmt.Errorf("the model has no tensor %s", name)
			}
			return nil
		}
		if len(t.Shape) != len(shape) {
			return fmt.Errorf("tensor %s has shape %v, want %v", name, t.Shape, shape)
		}
		for i := range shape {
			if t.Shape[i] != shape[i] {
				return fmt.Errorf("tensor %s has shape %v, want %v", name, t.Shape, shape)
			}
		}
		if !typeConvertible(t.Type) {
			return fmt.Errorf("tensor %s has type %s, which cannot be converted for training", name, t.TypeName())
		}
		return nil
	}
	check := []error{
		need("token_embd.weight", true, d, v),
		need("output_norm.weight", true, d),
		need("output.weight", false, d, v),
		need("output.bias", false, v),
	}
	if g.Arch() == "llama" {
		check = append(check, need("rope_freqs.weight", false, int64(hp.headDim/2)))
	}
	for il := 0; il < hp.nLayer; il++ {
		b := fmt.Sprintf("blk.%d.", il)
		check = append(check,
			need(b+"attn_norm.weight", true, d), need(b+"ffn_norm.weight", true, d),
			need(b+"attn_q.weight", true, d, qd), need(b+"attn_k.weight", true, d, kvd),
			need(b+"attn_v.weight", true, d, kvd), need(b+"attn_output.weight", true, qd, d),
			need(b+"ffn_gate.weight", true, d, ff), need(b+"ffn_up.weight", true, d, ff),
			need(b+"ffn_down.weight", true, ff, d),
			need(b+"attn_q.bias", false, qd), need(b+"attn_k.bias", false, kvd), need(b+"attn_v.bias", false, kvd))
		switch g.Arch() {
		case "llama":
			check = append(check, need(b+"attn_output.bias", false, d), need(b+"ffn_gate.bias", false, ff),
				need(b+"ffn_up.bias", false, ff), need(b+"ffn_down.bias", false, d))
		case "qwen3":
			check = append(check, need(b+"attn_q_norm.weight", true, int64(hp.headDim)), need(b+"attn_k_norm.weight", true, int64(hp.headDim)))
		}
	}
	for _, err := range check {
		if err != nil {
			return err
		}
	}
	return nil
}

// parseTargets turns target names into conch.h's bit mask.
func parseTargets(names []string) (uint32, error) {
	if len(names) == 0 {
		return targetsDefault, nil
	}
	var mask uint32
	for _, n := range names {
		found := false
		for i, t := range trainTargets {
			if strings.EqualFold(strings.TrimSpace(n), t.name) || strings.TrimSpace(n) == t.tensor {
				mask |= 1 << i
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown LoRA target %q (q, k, v, o, gate, up, down, lm_head)", n)
		}
	}
	return mask, nil
}
