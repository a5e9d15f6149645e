package testmodel

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/magicconch/conch/llama"
)

func TestSharedData(t *testing.T) {
	root, err := SharedData()
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(root) {
		t.Fatalf("SharedData %q is not absolute", root)
	}
	p, err := Stories260K()
	if err != nil {
		t.Fatal(err)
	}
	m, err := llama.LoadModel(p, llama.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Arch() != "llama" || m.VocabSize() != 512 {
		t.Fatalf("stories260K: arch %q vocab %d", m.Arch(), m.VocabSize())
	}
	if _, err := SharedFile("no", "such", "file"); err == nil {
		t.Fatal("SharedFile of a missing file did not fail")
	}
}

// decodeLogits runs prompt through a fresh context and returns the last token's logits.
func decodeLogits(t *testing.T, m *llama.Model, prompt []llama.Token, adapter *llama.Adapter) []float32 {
	t.Helper()
	ctx, err := llama.NewContext(m, llama.ContextParams{NCtx: 128, NBatch: 64, Threads: 2, KVF32: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	if adapter != nil {
		if err := ctx.SetAdapter(adapter, 1); err != nil {
			t.Fatal(err)
		}
	}
	b := llama.NewBatch(len(prompt))
	defer b.Free()
	for i, tok := range prompt {
		b.Add(tok, i, 0, i == len(prompt)-1)
	}
	if err := ctx.Decode(b); err != nil {
		t.Fatal(err)
	}
	return ctx.Logits(-1)
}

func checkLogits(t *testing.T, logits []float32, nVocab int) {
	t.Helper()
	if len(logits) != nVocab {
		t.Fatalf("got %d logits, want %d", len(logits), nVocab)
	}
	lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
	for i, v := range logits {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("logit %d is %v", i, v)
		}
		lo, hi = min(lo, v), max(hi, v)
	}
	if hi-lo < 1 {
		t.Fatalf("logits nearly constant: range [%g, %g]", lo, hi)
	}
}

func TestTinyModelsLoadAndRun(t *testing.T) {
	for _, arch := range []string{"llama", "qwen2", "qwen3"} {
		t.Run(arch, func(t *testing.T) {
			spec := Tiny(arch)
			path := Cached(t, spec)
			info, err := llama.Inspect(path)
			if err != nil {
				t.Fatal(err)
			}
			r, _ := spec.Resolved()
			v, err := loadVocab(r.Vocab)
			if err != nil {
				t.Fatal(err)
			}
			if info.Arch() != arch {
				t.Fatalf("Inspect arch %q, want %q", info.Arch(), arch)
			}
			if n := len(info.Tensors); n != len(plan(r, v.n)) {
				t.Fatalf("Inspect sees %d tensors, plan has %d", n, len(plan(r, v.n)))
			}
			_, hasOutput := info.Tensor("output.weight")
			if hasOutput == spec.Tied {
				t.Fatalf("tied=%v but output.weight present=%v", spec.Tied, hasOutput)
			}

			m, err := llama.LoadModel(path, llama.ModelParams{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if m.Embd() != spec.NEmbd || m.Layers() != spec.NLayer || m.VocabSize() != v.n {
				t.Fatalf("loaded embd %d layers %d vocab %d", m.Embd(), m.Layers(), m.VocabSize())
			}
			text := "Hello world, 你好世界! 请问你是谁"
			toks, err := m.Tokenize(text, false, false)
			if err != nil || len(toks) < 5 {
				t.Fatalf("tokenize: %v %v", toks, err)
			}
			got := m.Detokenize(toks, false, false)
			if arch == "llama" {
				got = got[min(len(got), len(got)-len(text)):] // SPM adds a leading space
			}
			if got != text {
				t.Fatalf("round trip: %q -> %v -> %q", text, toks, got)
			}
			logits := decodeLogits(t, m, toks, nil)
			checkLogits(t, logits, v.n)
			// A different prompt must give different logits (the model is not constant).
			other := decodeLogits(t, m, toks[:len(toks)-1], nil)
			if slices.Equal(logits, other) {
				t.Fatal("logits do not depend on the input")
			}
		})
	}
}

func TestQwenChatTemplate(t *testing.T) {
	m, err := llama.LoadModel(Cached(t, Tiny("qwen2")), llama.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want, err := readShared("chat-templates", "Qwen-Qwen2.5-7B-Instruct.jinja")
	if err != nil {
		t.Fatal(err)
	}
	if m.ChatTemplate() != want {
		t.Fatal("chat template is not Qwen2.5's")
	}
	if m.EOS() != 151645 || m.PAD() != 151643 || m.AddBOS() {
		t.Fatalf("eos %d pad %d addBOS %v", m.EOS(), m.PAD(), m.AddBOS())
	}
	toks, err := m.Tokenize("<|im_start|>user\n你好<|im_end|>", false, true)
	if err != nil {
		t.Fatal(err)
	}
	if toks[0] != 151644 || toks[len(toks)-1] != 151645 {
		t.Fatalf("special tokens not parsed: %v", toks)
	}
}

func TestDeterministic(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Arch: "llama", NEmbd: 16, NLayer: 1, NHead: 2, NFF: 32, Seed: 7, Type: "f16"}
	a, b, c := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf"), filepath.Join(dir, "c.gguf")
	if err := Write(a, spec); err != nil {
		t.Fatal(err)
	}
	if err := Write(b, spec); err != nil {
		t.Fatal(err)
	}
	spec.Seed = 8
	if err := Write(c, spec); err != nil {
		t.Fatal(err)
	}
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	bc, _ := os.ReadFile(c)
	if !bytes.Equal(ba, bb) {
		t.Fatal("same seed gave different files")
	}
	if len(ba) != len(bc) || bytes.Equal(ba, bc) {
		t.Fatal("a different seed must give a same-size, different file")
	}
	m, err := llama.LoadModel(a, llama.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	toks, _ := m.Tokenize("once upon a time", true, false)
	checkLogits(t, decodeLogits(t, m, toks, nil), m.VocabSize())
}

func TestSpecValidation(t *testing.T) {
	bad := []Spec{
		{Arch: "gpt2", NEmbd: 16, NLayer: 1, NHead: 2},
		{Arch: "llama", NEmbd: 16, NLayer: 1, NHead: 3},
		{Arch: "llama", NEmbd: 16, NLayer: 1, NHead: 4, NHeadKV: 3},
		{Arch: "qwen2", NEmbd: 16, NLayer: 1, NHead: 2, HeadDim: 16},
		{Arch: "llama", NEmbd: 16, NLayer: 1, NHead: 2, Type: "q4_0"},
		{Arch: "llama", NEmbd: 0, NLayer: 1, NHead: 2},
	}
	for _, s := range bad {
		if err := Write(filepath.Join(t.TempDir(), "x.gguf"), s); err == nil {
			t.Errorf("spec %+v: no error", s)
		}
	}
}

func TestF16(t *testing.T) {
	for _, v := range []float32{0, 1, -2.5, 0.1, 65504, 1e-7, 6e-5, -3.14159} {
		back := f16ToF32(f32ToF16(v))
		if d := math.Abs(float64(back - v)); d > math.Abs(float64(v))*1e-3+1e-7 {
			t.Errorf("%g -> %g", v, back)
		}
	}
	if f32ToF16(1) != 0x3c00 || f32ToF16(-2) != 0xc000 || f32ToF16(1e6) != 0x7c00 {
		t.Fatal("f16 bit patterns")
	}
}

func TestAdapterChangesLogits(t *testing.T) {
	for _, arch := range []string{"llama", "qwen2", "qwen3"} {
		t.Run(arch, func(t *testing.T) {
			base := Cached(t, Tiny(arch))
			dir := t.TempDir()
			ad := filepath.Join(dir, "adapter.gguf")
			if err := WriteAdapter(ad, base, AdapterSpec{Rank: 4, Seed: 3}); err != nil {
				t.Fatal(err)
			}
			info, err := llama.Inspect(ad)
			if err != nil {
				t.Fatal(err)
			}
			// 7 targets x 2 layers x (A, B)
			if len(info.Tensors) != 7*2*2 {
				t.Fatalf("adapter has %d tensors", len(info.Tensors))
			}
			if a, ok := info.Float("adapter.lora.alpha"); !ok || a != 8 {
				t.Fatalf("alpha %v %v", a, ok)
			}
			m, err := llama.LoadModel(base, llama.ModelParams{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			a, err := llama.LoadAdapter(m, ad)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			toks, _ := m.Tokenize("The quick brown fox 跳过了懒狗", false, false)
			plain := decodeLogits(t, m, toks, nil)
			adapted := decodeLogits(t, m, toks, a)
			checkLogits(t, adapted, m.VocabSize())
			var diff float64
			for i := range plain {
				diff = max(diff, math.Abs(float64(plain[i]-adapted[i])))
			}
			if diff < 0.1 {
				t.Fatalf("adapter barely changes logits (max diff %g)", diff)
			}
		})
	}
}

func TestAdapterTargetsAndErrors(t *testing.T) {
	base := Cached(t, Tiny("qwen2"))
	dir := t.TempDir()
	p := filepath.Join(dir, "qv.gguf")
	if err := WriteAdapter(p, base, AdapterSpec{Rank: 2, Targets: []string{"q", "ffn_down"}}); err != nil {
		t.Fatal(err)
	}
	info, err := llama.Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ti := range info.Tensors {
		names = append(names, ti.Name)
	}
	want := []string{
		"blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b", "blk.0.ffn_down.weight.lora_a", "blk.0.ffn_down.weight.lora_b",
		"blk.1.attn_q.weight.lora_a", "blk.1.attn_q.weight.lora_b", "blk.1.ffn_down.weight.lora_a", "blk.1.ffn_down.weight.lora_b",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("tensors %v", names)
	}
	q, _ := info.Tensor("blk.0.attn_q.weight.lora_a")
	d, _ := info.Tensor("blk.0.ffn_down.weight.lora_b")
	if !slices.Equal(q.Shape, []int64{32, 2}) || !slices.Equal(d.Shape, []int64{2, 32}) {
		t.Fatalf("shapes %v %v", q.Shape, d.Shape)
	}
	if err := WriteAdapter(p, base, AdapterSpec{Targets: []string{"lm_head"}}); err == nil {
		t.Fatal("unknown target accepted")
	}
	if err := WriteAdapter(p, p, AdapterSpec{}); err == nil {
		t.Fatal("an adapter accepted as base")
	}
	// An adapter for the llama model must not load onto the qwen2 one.
	other := filepath.Join(dir, "llama.gguf")
	if err := WriteAdapter(other, Cached(t, Tiny("llama")), AdapterSpec{Rank: 2}); err != nil {
		t.Fatal(err)
	}
	m, err := llama.LoadModel(base, llama.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if a, err := llama.LoadAdapter(m, other); err == nil {
		a.Close()
		t.Fatal("adapter for another architecture loaded")
	}
}

func TestTensorLayout(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []Spec{
		{Arch: "qwen2", NEmbd: 16, NLayer: 1, NHead: 2, NHeadKV: 1, NFF: 24, Type: "f16"},
		{Arch: "qwen3", NEmbd: 16, NLayer: 1, NHead: 2, NHeadKV: 1, HeadDim: 12, NFF: 24},
	} {
		p := filepath.Join(dir, s.Arch+".gguf")
		if err := Write(p, s); err != nil {
			t.Fatal(err)
		}
		g, err := llama.Inspect(p)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := s.Resolved()
		want := map[string][]int64{
			"blk.0.attn_norm.weight":   {16},
			"blk.0.attn_output.weight": {int64(r.NHead * r.HeadDim), 16},
			"blk.0.ffn_down.weight":    {24, 16},
			"output.weight":            {16, 151936},
		}
		if s.Arch == "qwen2" {
			want["blk.0.attn_q.weight"] = []int64{16, 16}
			want["blk.0.attn_k.bias"] = []int64{8}
			want["blk.0.attn_v.weight"] = []int64{16, 8}
		} else {
			want["blk.0.attn_q.weight"] = []int64{16, 24}
			want["blk.0.attn_k.weight"] = []int64{16, 12}
			want["blk.0.attn_q_norm.weight"] = []int64{12}
			want["blk.0.attn_k_norm.weight"] = []int64{12}
			if kl, _ := g.Uint("qwen3.attention.key_length"); kl != 12 {
				t.Errorf("key_length %d", kl)
			}
		}
		for name, shape := range want {
			ti, ok := g.Tensor(name)
			if !ok || !slices.Equal(ti.Shape, shape) {
				t.Errorf("%s %s: got %v (present %v), want %v", s.Arch, name, ti.Shape, ok, shape)
				continue
			}
			wantType := "f32"
			if s.Type == "f16" && len(shape) == 2 {
				wantType = "f16"
			}
			if !strings.EqualFold(ti.TypeName(), wantType) {
				t.Errorf("%s %s: type %s, want %s", s.Arch, name, ti.TypeName(), wantType)
			}
		}
		m, err := llama.LoadModel(p, llama.ModelParams{})
		if err != nil {
			t.Fatal(err)
		}
		toks, _ := m.Tokenize("hi there", false, false)
		checkLogits(t, decodeLogits(t, m, toks, nil), 151936)
		m.Close()
	}
}

func TestCachedReuses(t *testing.T) {
	s := Spec{Arch: "llama", NEmbd: 8, NLayer: 1, NHead: 2, Seed: 99}
	a := Cached(t, s)
	st, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	if b := Cached(t, s); b != a {
		t.Fatalf("same spec, different paths %s %s", a, b)
	}
	if st2, _ := os.Stat(a); !st2.ModTime().Equal(st.ModTime()) {
		t.Fatal("cached model was rewritten")
	}
	s.Seed = 100
	if c := Cached(t, s); c == a {
		t.Fatal("different seed, same path")
	}
}
