package convert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	oconvert "github.com/ollama/ollama/convert"
	"github.com/ollama/ollama/fs/ggml"

	"github.com/magicconch/conch/llama"
)

// peftConfig is what we read from adapter_config.json.
type peftConfig struct {
	PeftType      string             `json:"peft_type"`
	R             int                `json:"r"`
	LoraAlpha     float64            `json:"lora_alpha"`
	TargetModules json.RawMessage    `json:"target_modules"`
	UseRslora     bool               `json:"use_rslora"`
	UseDora       bool               `json:"use_dora"`
	ModulesToSave []string           `json:"modules_to_save"`
	FanInFanOut   bool               `json:"fan_in_fan_out"`
	RankPattern   map[string]int     `json:"rank_pattern"`
	AlphaPattern  map[string]float64 `json:"alpha_pattern"`
	BaseModel     string             `json:"base_model_name_or_path"`
}

// The modules a llama.cpp LoRA can carry, by their Hugging Face names.
var (
	peftLayerModule = regexp.MustCompile(`^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)$`)
	peftModuleName  = map[string]string{
		"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
		"mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
	}
)

// ggufWeight maps a PEFT module path (model.layers.3.self_attn.q_proj) to the llama.cpp
// weight it adapts (blk.3.attn_q.weight).
func ggufWeight(module string) (string, bool) {
	if module == "lm_head" {
		return "output.weight", true
	}
	m := peftLayerModule.FindStringSubmatch(module)
	if m == nil {
		return "", false
	}
	return "blk." + m[1] + "." + peftModuleName[m[2]] + ".weight", true
}

// Adapter converts the PEFT LoRA folder dir into a llama.cpp LoRA GGUF at out, for the
// base model GGUF at base (needed for the architecture, the shapes it checks and, for
// llama, the head counts that reorder q/k rows the way the model converter does).
func Adapter(ctx context.Context, dir, out, base string, opt Options) (*Result, error) {
	start := time.Now()
	cfg, weights, err := readPEFTFolder(dir)
	if err != nil {
		return nil, err
	}
	if base == "" {
		return nil, errors.New("converting an adapter needs the base model GGUF it was trained on (--base)")
	}
	bg, err := llama.Inspect(base)
	if err != nil {
		return nil, err
	}
	if bg.IsAdapter() {
		return nil, fmt.Errorf("%s is a LoRA adapter: --base must be the model", base)
	}
	arch := bg.Arch()
	if arch != "llama" && arch != "qwen2" && arch != "qwen3" {
		return nil, fmt.Errorf("%s: adapters for architecture %q are not supported (llama, qwen2, qwen3)", base, arch)
	}
	ts, rank, err := peftTensors(cfg, weights, bg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	kv := oconvert.KV{
		"general.architecture":    arch,
		"general.type":            "adapter",
		"general.name":            filepath.Base(filepath.Clean(dir)),
		"adapter.type":            "lora",
		"adapter.lora.alpha":      float32(cfg.LoraAlpha),
		"adapter.peft.r":          uint32(rank),
		"adapter.peft.use_rslora": cfg.UseRslora,
	}
	if cfg.BaseModel != "" {
		kv["general.base_model.count"] = uint32(1)
		kv["general.base_model.0.name"] = cfg.BaseModel
	}
	if t := targetList(cfg.TargetModules); len(t) > 0 {
		kv["adapter.peft.target_modules"] = t
	}
	var need int64
	for _, w := range weights {
		need += int64(w.elements()) * 4
	}
	err = writeOutput(ctx, out, opt.Force, need, func(f *os.File) error {
		return guard(func() error { return ggml.WriteGGUF(f, kv, ts) })
	}, func(tmp string) error {
		ag, err := llama.Inspect(tmp)
		if err != nil {
			return err
		}
		return llama.CheckAdapter(bg, ag)
	})
	if err != nil {
		return nil, err
	}
	return result(out, start)
}

// readPEFTFolder checks dir and reads its config and weights.
func readPEFTFolder(dir string) (*peftConfig, []stTensor, error) {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil, fmt.Errorf("%s: no such folder", dir)
	case err != nil:
		return nil, nil, err
	case !st.IsDir():
		return nil, nil, fmt.Errorf("%s is a file, not a PEFT adapter folder", dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, "adapter_config.json"))
	if err != nil {
		return nil, nil, fmt.Errorf("%s is not a PEFT adapter folder (no adapter_config.json)", dir)
	}
	var c peftConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, nil, fmt.Errorf("%s/adapter_config.json: invalid JSON: %v", dir, err)
	}
	switch {
	case c.PeftType != "" && c.PeftType != "LORA":
		return nil, nil, fmt.Errorf("%s: peft_type %s is not supported (only LORA)", dir, c.PeftType)
	case c.UseDora:
		return nil, nil, fmt.Errorf("%s: DoRA adapters (use_dora) cannot be expressed as a llama.cpp LoRA", dir)
	case c.FanInFanOut:
		return nil, nil, fmt.Errorf("%s: fan_in_fan_out adapters are not supported", dir)
	case c.R <= 0 || c.LoraAlpha <= 0 || math.IsInf(c.LoraAlpha, 0):
		return nil, nil, fmt.Errorf("%s/adapter_config.json: r and lora_alpha must be positive", dir)
	}
	p := filepath.Join(dir, "adapter_model.safetensors")
	if _, err := os.Stat(p); err != nil {
		if _, berr := os.Stat(filepath.Join(dir, "adapter_model.bin")); berr == nil {
			return nil, nil, fmt.Errorf("%s: only adapter_model.safetensors is supported (this folder has adapter_model.bin)", dir)
		}
		return nil, nil, fmt.Errorf("%s: no adapter_model.safetensors", dir)
	}
	ws, err := readSafetensors(p)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", dir, err)
	}
	return &c, ws, nil
}

// peftTensors maps the adapter's A/B pairs onto the base and returns them as llama.cpp's
// lora_a [n_in, r] and lora_b [r, n_out] (the same bytes as PEFT's lora_A [r, n_in] and
// lora_B [n_out, r]), with the largest rank.
func peftTensors(c *peftConfig, weights []stTensor, base *llama.GGUF) ([]*ggml.Tensor, int, error) {
	type pair struct{ a, b *stTensor }
	pairs := map[string]*pair{}
	for i := range weights {
		w := &weights[i]
		name := strings.TrimPrefix(w.Name, "base_model.model.")
		switch {
		case strings.Contains(name, "lora_embedding_"):
			return nil, 0, fmt.Errorf("LoRA on the token embedding (%s) is not supported", w.Name)
		case strings.Contains(name, "lora_magnitude_vector"):
			return nil, 0, errors.New("DoRA adapters cannot be expressed as a llama.cpp LoRA")
		}
		var module string
		var isA bool
		for _, sep := range []string{".lora_A.", ".lora_B."} {
			if i := strings.Index(name, sep); i > 0 && (strings.HasSuffix(name, sep+"weight") || strings.HasSuffix(name, sep+"default.weight")) {
				module, isA = name[:i], sep == ".lora_A."
			}
		}
		if module == "" {
			if len(c.ModulesToSave) > 0 {
				return nil, 0, fmt.Errorf("the adapter saves full copies of %v (modules_to_save), which a llama.cpp LoRA cannot carry", c.ModulesToSave)
			}
			return nil, 0, fmt.Errorf("unexpected tensor %s in the adapter", w.Name)
		}
		if len(w.Shape) != 2 {
			return nil, 0, fmt.Errorf("%s is not a matrix", w.Name)
		}
		p := pairs[module]
		if p == nil {
			p = &pair{}
			pairs[module] = p
		}
		if isA {
			p.a = w
		} else {
			p.b = w
		}
	}
	if len(pairs) == 0 {
		return nil, 0, errors.New("adapter_model.safetensors holds no LoRA weights")
	}
	modules := make([]string, 0, len(pairs))
	for m := range pairs {
		modules = append(modules, m)
	}
	sort.Strings(modules)

	arch := base.Arch()
	nHead, _ := base.Uint(arch + ".attention.head_count")
	nHeadKV, ok := base.Uint(arch + ".attention.head_count_kv")
	if !ok {
		nHeadKV = nHead
	}
	var out []*ggml.Tensor
	maxRank := 0
	for _, m := range modules {
		p := pairs[m]
		if p.a == nil || p.b == nil {
			return nil, 0, fmt.Errorf("module %s lacks its lora_A or lora_B", m)
		}
		wname, ok := ggufWeight(m)
		if !ok {
			return nil, 0, fmt.Errorf("LoRA on module %s is not supported (q, k, v, o, gate, up, down projections and lm_head are)", m)
		}
		bw, ok := base.Tensor(wname)
		if !ok {
			return nil, 0, fmt.Errorf("the base model has no %s for module %s: made for another model?", wname, m)
		}
		r := int(p.a.Shape[0])
		if int64(p.a.Shape[1]) != bw.Shape[0] || len(bw.Shape) != 2 || int64(p.b.Shape[0]) != bw.Shape[1] || int(p.b.Shape[1]) != r {
			return nil, 0, fmt.Errorf("module %s: lora_A %v and lora_B %v do not fit the base weight %s %v (ggml order): made for another model",
				m, p.a.Shape, p.b.Shape, wname, bw.Shape)
		}
		maxRank = max(maxRank, r)
		a, err := p.a.readF32()
		if err != nil {
			return nil, 0, err
		}
		b, err := p.b.readF32()
		if err != nil {
			return nil, 0, err
		}
		// llama.cpp scales every pair by lora_alpha / r; fold any other PEFT scale
		// (alpha_pattern, rsLoRA) into B so that the product is the same.
		alpha := c.LoraAlpha
		if v, ok := matchPattern(c.AlphaPattern, m); ok {
			alpha = v
		}
		want := alpha / float64(r)
		if c.UseRslora {
			want = alpha / math.Sqrt(float64(r))
		}
		if f := want * float64(r) / c.LoraAlpha; math.Abs(f-1) > 1e-12 {
			for i := range b {
				b[i] *= float32(f)
			}
		}
		// llama's q/k rows are reordered by the model converter (rotary halves
		// interleaved); B's rows are those output rows.
		if arch == "llama" && (strings.HasSuffix(wname, "attn_q.weight") || strings.HasSuffix(wname, "attn_k.weight")) {
			heads := int(nHead)
			if strings.HasSuffix(wname, "attn_k.weight") {
				heads = int(nHeadKV)
			}
			if heads <= 0 || int(p.b.Shape[0])%(2*heads) != 0 {
				return nil, 0, fmt.Errorf("module %s: %d rows do not split into %d heads", m, p.b.Shape[0], heads)
			}
			b = permuteRows(b, int(p.b.Shape[0]), r, heads)
		}
		out = append(out,
			&ggml.Tensor{Name: wname + ".lora_a", Kind: kindF32, Shape: ggmlShape(p.a.Shape), WriterTo: f32Data{a, kindF32}},
			&ggml.Tensor{Name: wname + ".lora_b", Kind: kindF32, Shape: ggmlShape(p.b.Shape), WriterTo: f32Data{b, kindF32}})
	}
	return out, maxRank, nil
}

// permuteRows reorders the rows of a [rows, cols] matrix from Hugging Face's rotary
// layout (per head: first halves, then second halves) to llama.cpp's (pairs
// interleaved), as llama.cpp's and ollama's llama converters do for q and k.
func permuteRows(m []float32, rows, cols, heads int) []float32 {
	out := make([]float32, len(m))
	d := rows / heads
	half := d / 2
	for h := 0; h < heads; h++ {
		for s := 0; s < 2; s++ {
			for j := 0; j < half; j++ {
				src := h*d + s*half + j
				dst := h*d + 2*j + s
				copy(out[dst*cols:(dst+1)*cols], m[src*cols:(src+1)*cols])
			}
		}
	}
	return out
}

// matchPattern finds the value of the pattern that matches module the way PEFT does
// (the key matches the whole name or its trailing dotted part; keys may be regular
// expressions).
func matchPattern[T any](patterns map[string]T, module string) (T, bool) {
	var zero T
	keys := make([]string, 0, len(patterns))
	for k := range patterns {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if module == k || strings.HasSuffix(module, "."+k) {
			return patterns[k], true
		}
		if re, err := regexp.Compile(`^(?:.*\.)?` + k + `$`); err == nil && re.MatchString(module) {
			return patterns[k], true
		}
	}
	return zero, false
}

// targetList renders target_modules (a list or a single string) as strings.
func targetList(raw json.RawMessage) []string {
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return []string{s}
	}
	return nil
}
