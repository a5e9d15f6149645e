package llama_test

import (
	"encoding/binary"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ollama/ollama/fs/ggml"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

type f32s []float32

func (v f32s) WriteTo(w io.Writer) (int64, error) {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	n, err := w.Write(b)
	return int64(n), err
}

// An adapter on token_embd.weight is stored flipped (llama.cpp's loader and graph:
// A [r, n_vocab] picked by token, B [r, n_embd]); the merge must add A[t]·B[e] to row t.
// Checked element by element against a computation written here from that convention.
func TestMergeTokenEmbedding(t *testing.T) {
	base := testmodel.Cached(t, testmodel.Tiny("llama"))
	ad, a, b, r := writeEmbdAdapter(t, base)
	g, err := llama.Inspect(base)
	if err != nil {
		t.Fatal(err)
	}
	emb, _ := g.Tensor("token_embd.weight")
	nEmbd, nVocab := int(emb.Shape[0]), int(emb.Shape[1])
	const scale = 0.5
	res := merge(t, llama.MergeParams{Base: base, LoRAs: []llama.MergeLoRA{{Path: ad, Scale: scale}}, Type: "f32"})
	_, bt := rawGGUF(t, base)
	_, mt := rawGGUF(t, res.Output)
	w0, w1 := bt["token_embd.weight"], mt["token_embd.weight"]
	s := scale * 6 / float64(r)
	worst := 0.0
	for tok := 0; tok < nVocab; tok++ {
		for e := 0; e < nEmbd; e++ {
			var dot float64
			for k := 0; k < r; k++ {
				dot += float64(a[tok*r+k]) * float64(b[e*r+k])
			}
			i := tok*nEmbd + e
			want := float64(math.Float32frombits(binary.LittleEndian.Uint32(w0[4*i:]))) + s*dot
			got := float64(math.Float32frombits(binary.LittleEndian.Uint32(w1[4*i:])))
			worst = math.Max(worst, math.Abs(got-want))
		}
	}
	if worst > 1e-5 {
		t.Fatalf("token_embd merged wrong: off by %g", worst)
	}
}

// writeEmbdAdapter writes an adapter on token_embd.weight alone, in llama.cpp's flipped
// layout, with random A [r, n_vocab] and B [r, n_embd] and alpha 6.
func writeEmbdAdapter(t *testing.T, base string) (path string, a, b f32s, r int) {
	t.Helper()
	g, err := llama.Inspect(base)
	if err != nil {
		t.Fatal(err)
	}
	emb, _ := g.Tensor("token_embd.weight")
	nEmbd, nVocab := int(emb.Shape[0]), int(emb.Shape[1])
	r = 3
	rng := rand.New(rand.NewPCG(1, 2))
	a = make(f32s, r*nVocab)
	b = make(f32s, r*nEmbd)
	for i := range a {
		a[i] = float32(rng.NormFloat64())
	}
	for i := range b {
		b[i] = float32(rng.NormFloat64())
	}
	path = filepath.Join(t.TempDir(), "embd.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	kv := ggml.KV{"general.architecture": g.Arch(), "general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": float32(6)}
	err = ggml.WriteGGUF(f, kv, []*ggml.Tensor{
		{Name: "token_embd.weight.lora_a", Kind: 0, Shape: []uint64{uint64(r), uint64(nVocab)}, WriterTo: a},
		{Name: "token_embd.weight.lora_b", Kind: 0, Shape: []uint64{uint64(r), uint64(nEmbd)}, WriterTo: b},
	})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return path, a, b, r
}
