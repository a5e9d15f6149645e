package llama

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
)

// trModel returns the path of a model for trainer tests: "stories" is the real
// stories260K llama, anything else a testmodel.Tiny preset (or spec when given).
func trModel(t *testing.T, name string) string {
	t.Helper()
	if name == "stories" {
		p, err := testmodel.Stories260K()
		if err != nil {
			t.Skip(err)
		}
		return p
	}
	return testmodel.Cached(t, testmodel.Tiny(name))
}

func trLoad(t *testing.T, path string) *Model {
	t.Helper()
	m, err := LoadModel(path, ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func trNew(t *testing.T, m *Model, p TrainParams) *Trainer {
	t.Helper()
	tr, err := NewTrainer(m, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return tr
}

// trTokens is a deterministic token sequence inside the vocabulary.
func trTokens(n, vocab int, seed uint64) []Token {
	r := rand.New(rand.NewPCG(seed, 7))
	out := make([]Token, n)
	for i := range out {
		out[i] = Token(r.IntN(min(vocab, 5000)))
	}
	return out
}

// llamaAllLogits decodes tokens in one batch with llama.cpp (F32 KV cache) and returns
// the logits of every position, optionally with an adapter applied at scale 1.
func llamaAllLogits(t *testing.T, m *Model, tokens []Token, a *Adapter) []float32 {
	t.Helper()
	ctx, err := NewContext(m, ContextParams{NCtx: 256, NBatch: len(tokens), KVF32: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	if a != nil {
		if err := ctx.SetAdapter(a, 1); err != nil {
			t.Fatal(err)
		}
	}
	b := NewBatch(len(tokens))
	defer b.Free()
	for i, tk := range tokens {
		b.Add(tk, i, 0, true)
	}
	if err := ctx.Decode(b); err != nil {
		t.Fatal(err)
	}
	var out []float32
	for i := range tokens {
		out = append(out, ctx.Logits(i)...)
	}
	return out
}

// relErr is max|a-b| / max|b|: the logits' error relative to their scale.
func relErr(a, b []float32) float64 {
	var d, s float64
	for i := range b {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
		s = math.Max(s, math.Abs(float64(b[i])))
	}
	return d / s
}

func TestTrainerLogitsMatchLlamaCpp(t *testing.T) {
	for _, name := range []string{"stories", "llama", "qwen2", "qwen3"} {
		t.Run(name, func(t *testing.T) {
			path := trModel(t, name)
			m := trLoad(t, path)
			tr := trNew(t, m, TrainParams{Rank: 4, Alpha: 8, MaxSeqLen: 32, Seed: 1})
			tokens := trTokens(24, m.VocabSize(), 1)

			// B = 0: the adapter is a no-op and the forward must be llama.cpp's.
			got, err := tr.Logits(tokens)
			if err != nil {
				t.Fatal(err)
			}
			want := llamaAllLogits(t, m, tokens, nil)
			t.Logf("base: relative error %.3g", relErr(got, want))
			if e := relErr(got, want); e > 1e-4 || math.IsNaN(e) {
				t.Fatalf("base logits: relative error %.3g", e)
			}

			// Random A and B, saved as an adapter and applied by llama.cpp: pins tensor
			// names, orientation and the alpha/r scale.
			r := rand.New(rand.NewPCG(3, 4))
			for _, name := range tr.Params() {
				v := tr.Get(name)
				for i := range v {
					v[i] = float32(r.NormFloat64() * 0.05)
				}
				if err := tr.Set(name, v); err != nil {
					t.Fatal(err)
				}
			}
			got, err = tr.Logits(tokens)
			if err != nil {
				t.Fatal(err)
			}
			if e := relErr(got, want); e < 1e-3 {
				t.Fatalf("a random adapter changed the logits by only %.3g: LoRA not applied", e)
			}
			ad := filepath.Join(t.TempDir(), "adapter.gguf")
			if err := tr.SaveAdapter(ad, map[string]string{"note": "parity"}); err != nil {
				t.Fatal(err)
			}
			a, err := LoadAdapter(m, ad)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if v, _ := a.Meta("conch.train.note"); v != "parity" {
				t.Fatalf("adapter meta conch.train.note = %q", v)
			}
			want = llamaAllLogits(t, m, tokens, a)
			t.Logf("adapter: relative error %.3g", relErr(got, want))
			if e := relErr(got, want); e > 1e-4 || math.IsNaN(e) {
				t.Fatalf("adapter logits: relative error %.3g", e)
			}
		})
	}
}
