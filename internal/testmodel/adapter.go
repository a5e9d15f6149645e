package testmodel

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// AdapterSpec describes a random LoRA adapter. Zero fields take the defaults listed.
type AdapterSpec struct {
	Rank  int     // r (default 8)
	Alpha float32 // adapter.lora.alpha (default 2*Rank); llama.cpp scales by Alpha/Rank
	// Targets are the adapted weights: q, k, v, o, gate, up, down or llama.cpp's names
	// (attn_q, ..., ffn_down). Default: all seven, like LLaMA-Factory's lora_target all.
	Targets []string
	Seed    uint64
	// Scale sizes the update: A ~ N(0, 1/n_in) and B ~ N(0, Scale²/r), so for unit-scale
	// inputs each output of B·A·x is about Scale (times Alpha/Rank). Default 0.5, which
	// moves logits clearly; both A and B are non-zero (unlike a fresh training adapter).
	Scale float32
	Name  string // general.name (default "conch-testadapter")
}

// DefaultTargets are the LoRA targets used when AdapterSpec.Targets is empty.
var DefaultTargets = []string{"q", "k", "v", "o", "gate", "up", "down"}

var targetNames = map[string]string{
	"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
	"gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down",
}

// TargetTensor maps a LoRA target (q, k, v, o, gate, up, down, or the llama.cpp name
// itself) to llama.cpp's tensor name stem (attn_q, ...).
func TargetTensor(target string) (string, error) {
	if n, ok := targetNames[target]; ok {
		return n, nil
	}
	for _, n := range targetNames {
		if n == target {
			return n, nil
		}
	}
	return "", fmt.Errorf("testmodel: unknown LoRA target %q (q, k, v, o, gate, up, down)", target)
}

// WriteAdapter writes a random LoRA adapter for the base model file in llama.cpp's LoRA
// GGUF format (src/llama-adapter.cpp): general.type=adapter, adapter.type=lora,
// adapter.lora.alpha, and per adapted weight W (ggml shape [n_in, n_out]) the F32 tensors
// <W>.lora_a [n_in, r] and <W>.lora_b [r, n_out].
func WriteAdapter(path, base string, a AdapterSpec) error {
	if a.Rank == 0 {
		a.Rank = 8
	}
	if a.Alpha == 0 {
		a.Alpha = 2 * float32(a.Rank)
	}
	if a.Scale == 0 {
		a.Scale = 0.5
	}
	if len(a.Targets) == 0 {
		a.Targets = DefaultTargets
	}
	if a.Name == "" {
		a.Name = "conch-testadapter"
	}
	if a.Rank < 0 || a.Rank > 4096 {
		return fmt.Errorf("testmodel: LoRA rank %d out of range", a.Rank)
	}
	if a.Alpha < 0 || math.IsNaN(float64(a.Alpha)) || a.Scale < 0 {
		return errors.New("testmodel: negative LoRA alpha or scale")
	}
	stems := map[string]bool{}
	for _, t := range a.Targets {
		n, err := TargetTensor(t)
		if err != nil {
			return err
		}
		stems[n] = true
	}

	g, err := readGGUFHeader(base)
	if err != nil {
		return err
	}
	arch := g.str("general.architecture")
	if arch == "" || g.str("general.type") == "adapter" {
		return fmt.Errorf("%s: not a base model", base)
	}
	type pair struct {
		info tensorInfo
		dist initDist
	}
	var ts []pair
	r := uint64(a.Rank)
	for _, w := range g.tensors {
		stem, ok := blockWeightStem(w.name)
		if !ok || !stems[stem] {
			continue
		}
		if len(w.shape) != 2 {
			return fmt.Errorf("%s: %s is not a matrix", base, w.name)
		}
		nIn, nOut := w.shape[0], w.shape[1]
		stemName := strings.TrimSuffix(w.name, ".weight")
		ts = append(ts,
			pair{tensorInfo{name: stemName + ".weight.lora_a", shape: []uint64{nIn, r}, typ: typeF32}, initDist{0, 1 / math.Sqrt(float64(nIn))}},
			pair{tensorInfo{name: stemName + ".weight.lora_b", shape: []uint64{r, nOut}, typ: typeF32}, initDist{0, float64(a.Scale) / math.Sqrt(float64(r))}})
	}
	if len(ts) == 0 {
		return fmt.Errorf("%s: no weights match the LoRA targets %v", base, a.Targets)
	}
	kvs := []kv{
		kvStr("general.architecture", arch),
		kvStr("general.type", "adapter"),
		kvStr("general.name", a.Name),
		kvStr("adapter.type", "lora"),
		kvF32("adapter.lora.alpha", a.Alpha),
	}
	infos := make([]tensorInfo, len(ts))
	for i, t := range ts {
		infos[i] = t.info
	}
	return writeFile(path, kvs, infos, func(i int, emit func([]float32)) {
		fill(a.Seed, ts[i].info, ts[i].dist, emit)
	})
}

// blockWeightStem returns "attn_q" for "blk.3.attn_q.weight".
func blockWeightStem(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return "", false
	}
	_, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, ".weight")
}
