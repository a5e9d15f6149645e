package llama

// #include "ggml.h"
import "C"

import (
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
)

// Conversions to the plain types (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl)
// are written by our own writer, tensor by tensor, with the per-tensor choices of
// llama.cpp's quantiser (src/llama-quant.cpp, llama_tensor_get_type) restated here for
// these types, so the output has the bytes llama-quantize would write. The one
// difference: where a tensor's rows do not fill the type's blocks llama.cpp gives up on
// the whole model ("Unsupported tensor size"); we keep such a tensor in a type that fits,
// as llama.cpp itself does for the K-quants, and say which. The K-quant mixes (q4_k_m,
// ...) still go through llama_model_quantize: their recipe is larger and they fall back
// per tensor already.

// plain reports whether the type is written by our writer rather than llama.cpp's
// quantiser.
func (q QuantType) plain() bool { return !q.kQuant() }

// TypeFallback is a tensor whose rows do not fill the blocks of the requested type and
// that keeps another type (llama.cpp's fallback for the K-quants, else f16).
type TypeFallback struct {
	Tensor string
	Type   string // the type it has in the output
}

// planTypes chooses the output type of each tensor of g (in file order) for a plain
// type q. Adapted tensors (merged) are converted even when their type stays.
func planTypes(g *GGUF, q QuantType) []uint32 {
	types := make([]uint32, len(g.Tensors))
	r := newRecipe(g, q)
	// llama.cpp walks the tensors ordered by layer, then name; its per-layer counters
	// (ffn_down) follow that order.
	order := make([]int, len(g.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		na, nb := g.Tensors[order[a]].Name, g.Tensors[order[b]].Name
		la, lb := blockIndex(na), blockIndex(nb)
		if la != lb {
			return la < lb
		}
		return na < nb
	})
	for _, i := range order {
		t := g.Tensors[i]
		types[i] = t.Type
		if quantizable(t) {
			types[i] = r.tensorType(t)
		}
	}
	return types
}

// mergeTypes are the types of the intermediate file a K-quant merge hands to llama.cpp's
// quantiser: adapted tensors stay in their float type (f16 for a quantised base), the
// rest keep theirs.
func mergeTypes(g *GGUF, touched map[string]bool) []uint32 {
	types := make([]uint32, len(g.Tensors))
	for i, t := range g.Tensors {
		types[i] = t.Type
		if touched[t.Name] && !isFloatType(t.Type) {
			types[i] = C.GGML_TYPE_F16
		}
	}
	return types
}

// recipe holds what llama.cpp's per-tensor choice depends on.
type recipe struct {
	q         QuantType
	arch      string
	hasOutput bool
	nLayer    int
	nExpert   int
	nGQA      int
	iFFNDown  int // ffn_down tensors seen so far, in llama.cpp's order
}

func newRecipe(g *GGUF, q QuantType) *recipe {
	arch := g.Arch()
	_, hasOutput := g.Tensor("output.weight")
	r := &recipe{q: q, arch: arch, hasOutput: hasOutput}
	r.nLayer = int(firstUint(g, arch+".block_count"))
	r.nExpert = max(1, int(firstUint(g, arch+".expert_count")))
	heads := firstUint(g, arch+".attention.head_count")
	kv := heads
	if _, ok := g.KV[arch+".attention.head_count_kv"]; ok {
		kv = firstUint(g, arch+".attention.head_count_kv")
	}
	if kv > 0 {
		r.nGQA = int(heads / kv)
	}
	return r
}

// tensorType is llama.cpp's choice for a tensor it quantises, then the fallback where
// the rows do not fit that choice.
func (r *recipe) tensorType(t TensorInfo) uint32 {
	if r.q.IsFloat() {
		return r.q.weight // llama.cpp applies no recipe to float types
	}
	typ := r.q.weight
	name := t.Name
	iq4nl := r.q.weight == C.GGML_TYPE_IQ4_NL
	switch {
	case name == "output.weight" || !r.hasOutput && name == "token_embd.weight":
		// The output head gets more bits, unless its rows do not fit the type.
		switch {
		case r.arch == "falcon" || t.Shape[0]%int64(typeBlock(typ)) != 0:
			typ = C.GGML_TYPE_Q8_0
		case typ != C.GGML_TYPE_Q8_0:
			typ = C.GGML_TYPE_Q6_K
		}
	case name == "token_embd.weight" || name == "per_layer_token_embd.weight":
	case strings.Contains(name, "attn_v.weight"):
		if iq4nl && r.nGQA >= 4 {
			typ = C.GGML_TYPE_Q5_K
		}
		if r.nExpert == 8 {
			typ = C.GGML_TYPE_Q8_0
		}
	case strings.Contains(name, "attn_k.weight"):
		if r.nExpert == 8 {
			typ = C.GGML_TYPE_Q8_0
		}
	case strings.Contains(name, "attn_q.weight"):
	case strings.Contains(name, "ffn_down"):
		layer := r.iFFNDown
		if r.nExpert > 1 {
			if l := blockIndex(name); l >= 0 {
				layer = l
			}
		}
		// Without an importance matrix the first eighth of the layers get more bits.
		if iq4nl && layer < r.nLayer/8 {
			typ = C.GGML_TYPE_Q5_K
		}
		r.iFFNDown++
	case strings.Contains(name, "attn_output.weight"):
		if iq4nl && r.arch != "falcon" && r.nExpert == 8 {
			typ = C.GGML_TYPE_Q5_K
		}
	}
	return fitType(typ, t.Shape[0])
}

// fitType is typ when rows of n values fill its blocks, else llama.cpp's fallback for
// the K-quant types, else f16 (which fits any row).
func fitType(typ uint32, n int64) uint32 {
	if n%int64(typeBlock(typ)) == 0 {
		return typ
	}
	switch typ {
	case C.GGML_TYPE_Q2_K, C.GGML_TYPE_Q3_K, C.GGML_TYPE_IQ4_XS:
		typ = C.GGML_TYPE_IQ4_NL
	case C.GGML_TYPE_Q4_K:
		typ = C.GGML_TYPE_Q5_0
	case C.GGML_TYPE_Q5_K:
		typ = C.GGML_TYPE_Q5_1
	case C.GGML_TYPE_Q6_K:
		typ = C.GGML_TYPE_Q8_0
	default:
		return C.GGML_TYPE_F16
	}
	if n%int64(typeBlock(typ)) != 0 {
		return C.GGML_TYPE_F16
	}
	return typ
}

// checkConvertible says why a tensor cannot be written in its planned type.
func checkConvertible(g *GGUF, types []uint32, touched map[string]bool) error {
	for i, t := range g.Tensors {
		if types[i] == t.Type && !touched[t.Name] {
			continue
		}
		if !dequantisable(t.Type) {
			return fmt.Errorf("tensor %s has type %s, which cannot be converted", t.Name, t.TypeName())
		}
		if bool(C.ggml_quantize_requires_imatrix(C.enum_ggml_type(types[i]))) {
			return fmt.Errorf("tensor %s: %s needs an importance matrix", t.Name, TypeName(types[i]))
		}
		if t.Shape[0]%int64(typeBlock(types[i])) != 0 {
			return fmt.Errorf("tensor %s has rows of %d values, which do not fit %s", t.Name, t.Shape[0], TypeName(types[i]))
		}
	}
	return nil
}

// fallbacks lists the tensors of the written file out that the quantiser would convert
// but whose rows do not fit q's blocks, with the type they got instead.
func fallbacks(out *GGUF, q QuantType) (fb []TypeFallback, converted int) {
	blck := int64(typeBlock(q.weight))
	for _, t := range out.Tensors {
		if !quantizable(t) {
			continue
		}
		converted++
		if t.Shape[0]%blck != 0 {
			fb = append(fb, TypeFallback{Tensor: t.Name, Type: t.TypeName()})
		}
	}
	return fb, converted
}

// warnFallbacks logs one line naming the tensors that could not take q.
func warnFallbacks(q QuantType, fb []TypeFallback, converted int) {
	if len(fb) > 0 {
		slog.Warn(fallbackWarning(q, fb, converted))
	}
}

// fallbackWarning says in one line which tensors kept another type than q, layers
// folded: "blk.0-4.ffn_down.weight as f16".
func fallbackWarning(q QuantType, fb []TypeFallback, converted int) string {
	type group struct {
		stem, typ string
		layers    []int
	}
	var groups []*group
	find := map[string]*group{}
	for _, f := range fb {
		stem, layer := f.Tensor, -1
		if l := blockIndex(f.Tensor); l >= 0 {
			stem, layer = strings.SplitN(f.Tensor, ".", 3)[2], l
		}
		key := stem + " " + f.Type
		g := find[key]
		if g == nil {
			g = &group{stem: stem, typ: f.Type}
			find[key] = g
			groups = append(groups, g)
		}
		if layer >= 0 {
			g.layers = append(g.layers, layer)
		}
	}
	parts := make([]string, len(groups))
	for i, g := range groups {
		name := g.stem
		if len(g.layers) > 0 {
			name = "blk." + foldRanges(g.layers) + "." + g.stem
		}
		parts[i] = name + " as " + g.typ
	}
	return fmt.Sprintf("%d of %d tensors have rows that do not fill %s's blocks of %d values and keep another type: %s",
		len(fb), converted, q.Name, typeBlock(q.weight), strings.Join(parts, ", "))
}

// foldRanges writes 0,1,2,3,5 as "0-3,5".
func foldRanges(ns []int) string {
	sort.Ints(ns)
	var b strings.Builder
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(ns[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(ns[j]))
		}
		i = j + 1
	}
	return b.String()
}

// blockIndex is the layer of "blk.N.…", or -1.
func blockIndex(name string) int {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return -1
	}
	num, _, ok := strings.Cut(rest, ".")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// firstUint is an integer key, or the first element of a per-layer array of them.
func firstUint(g *GGUF, key string) uint64 {
	v := g.KV[key]
	if a, ok := v.([]any); ok && len(a) > 0 {
		v = a[0]
	}
	one := GGUF{KV: map[string]any{"v": v}}
	n, _ := one.Uint("v")
	return n
}

// plannedSize is the size of g written with the given tensor types.
func plannedSize(g *GGUF, types []uint32) int64 {
	n := g.DataOffset + 1<<20 // added keys
	for i, t := range g.Tensors {
		n += tensorBytes(t, types[i]) + 32
	}
	return n
}
