package llama_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

// An adapter on the output head (written by the trainer, so with its names and layout)
// merges into output.weight: the merged F32 model gives the logits of the base with the
// adapter applied by llama.cpp at run time.
func TestMergeOutputHeadAdapter(t *testing.T) {
	base, err := testmodel.Stories260K()
	if err != nil {
		t.Skip(err)
	}
	m, err := llama.LoadModel(base, llama.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tr, err := llama.NewTrainer(m, llama.TrainParams{Rank: 4, Alpha: 8, MaxSeqLen: 16, Targets: []string{"lm_head", "v"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	r := rand.New(rand.NewPCG(8, 9))
	for _, name := range tr.Params() {
		v := tr.Get(name)
		for i := range v {
			v[i] = float32(r.NormFloat64() * 0.1)
		}
		if err := tr.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
	ad := filepath.Join(t.TempDir(), "head.gguf")
	if err := tr.SaveAdapter(ad, nil); err != nil {
		t.Fatal(err)
	}
	const scale = 0.8
	res := merge(t, llama.MergeParams{Base: base, LoRAs: []llama.MergeLoRA{{Path: ad, Scale: scale}}, Type: "f32"})
	if want := 5 + 1; res.Merged != want { // attn_v of 5 blocks and output.weight
		t.Fatalf("merged %d tensors, want %d", res.Merged, want)
	}
	_, bt := rawGGUF(t, base)
	_, mt := rawGGUF(t, res.Output)
	if string(bt["output.weight"]) == string(mt["output.weight"]) {
		t.Fatal("output.weight is unchanged by the merge")
	}
	plain := mergeLogits(t, base)
	want := mergeLogits(t, base, runtimeLoRA{ad, scale})
	got := mergeLogits(t, res.Output)
	moved, _ := logitsDiff(plain, want)
	diff, sc := logitsDiff(got, want)
	t.Logf("adapter moves logits by up to %.4f; merged vs runtime differ by %.2e (logits up to %.2f)", moved, diff, sc)
	if moved < 0.05 {
		t.Fatalf("the adapter barely changes the logits (%g): the test proves nothing", moved)
	}
	if diff > 1e-4*math.Max(sc, 1) {
		t.Fatalf("merged model differs from base + runtime adapter by %g", diff)
	}
}
