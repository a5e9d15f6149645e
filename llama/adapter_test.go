package llama

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
)

// lastLogits decodes toks on sequence 0 of a cleared context and returns the last logits.
func lastLogits(t *testing.T, ctx *Context, toks []Token) []float32 {
	t.Helper()
	ctx.ClearKV()
	b := NewBatch(len(toks))
	defer b.Free()
	for i, tk := range toks {
		b.Add(tk, i, 0, i == len(toks)-1)
	}
	if err := ctx.Decode(b); err != nil {
		t.Fatal(err)
	}
	return ctx.Logits(len(toks) - 1)
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func TestAdapterSetRemove(t *testing.T) {
	base := testmodel.Cached(t, testmodel.Tiny("qwen2"))
	dir := t.TempDir()
	ad := filepath.Join(dir, "adapter.gguf")
	if err := testmodel.WriteAdapter(ad, base, testmodel.AdapterSpec{Rank: 4, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	m, err := LoadModel(base, ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, err := NewContext(m, ContextParams{NCtx: 128, KVF32: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	a, err := LoadAdapter(m, ad)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if v, ok := a.Meta("adapter.type"); !ok || v != "lora" {
		t.Fatalf("adapter.type %q", v)
	}
	toks, _ := m.Tokenize("请问你是谁? Who are you?", true, false)
	plain := lastLogits(t, ctx, toks)
	if err := ctx.SetAdapter(a, 1); err != nil {
		t.Fatal(err)
	}
	with := lastLogits(t, ctx, toks)
	if maxDiff(plain, with) < 1e-3 {
		t.Fatal("the adapter did not change the logits")
	}
	// llama.cpp would reuse the graph built without the adapter for a same-shape batch;
	// SetAdapter/RemoveAdapter must make the next decode see the change.
	ctx.RemoveAdapter(a)
	if d := maxDiff(plain, lastLogits(t, ctx, toks)); d != 0 {
		t.Fatalf("after RemoveAdapter logits differ from the base by %g", d)
	}
	if err := ctx.SetAdapter(a, 0.5); err != nil {
		t.Fatal(err)
	}
	half := lastLogits(t, ctx, toks)
	if maxDiff(half, with) < 1e-4 || maxDiff(half, plain) < 1e-4 {
		t.Fatal("scale 0.5 gave the same logits as 0 or 1")
	}
	ctx.ClearAdapters()
	if d := maxDiff(plain, lastLogits(t, ctx, toks)); d != 0 {
		t.Fatalf("after ClearAdapters logits differ from the base by %g", d)
	}
}

func TestAdapterForAnotherModel(t *testing.T) {
	base := testmodel.Cached(t, testmodel.Tiny("qwen2"))
	llamaBase := testmodel.Cached(t, testmodel.Tiny("llama"))
	wider := testmodel.Tiny("qwen2")
	wider.NEmbd, wider.NFF, wider.Name = 64, 128, "wider-qwen2"
	widerBase := testmodel.Cached(t, wider)
	dir := t.TempDir()
	forLlama := filepath.Join(dir, "llama-adapter.gguf")
	forWider := filepath.Join(dir, "wider-adapter.gguf")
	if err := testmodel.WriteAdapter(forLlama, llamaBase, testmodel.AdapterSpec{}); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteAdapter(forWider, widerBase, testmodel.AdapterSpec{}); err != nil {
		t.Fatal(err)
	}
	m, err := LoadModel(base, ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for path, want := range map[string]string{
		forLlama:                   `adapter is for architecture "llama", the model is "qwen2"`,
		forWider:                   "made for another model",
		base:                       "not a LoRA adapter",
		filepath.Join(dir, "none"): "no such file",
	} {
		a, err := LoadAdapter(m, path)
		if err == nil {
			a.Close()
			t.Fatalf("%s: loaded", path)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q, want %q", filepath.Base(path), err, want)
		}
	}
}
