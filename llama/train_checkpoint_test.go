package llama

import (
	"math"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
)

// Gradient checkpointing recomputes each layer during the backward pass: the loss and
// every gradient must be those of the one-graph step (up to the order in which
// gradient contributions are summed: about 1e-6 apart here), for each architecture, for held
// weights that take the transposed-copy backward (q8_0), for a sequence whose
// supervised rows go through the output head in several slices (qwen2's 151k
// vocabulary: 110 rows a slice), and when only the output head is trained (no layer
// runs backward at all).
func TestTrainerCheckpointingMatches(t *testing.T) {
	cases := []struct {
		name, model, ct string
		targets         []string
		n               int
	}{
		{"llama", "llama", "f32", trAllWithHead, 24},
		{"qwen2", "qwen2", "f32", nil, 24},
		{"qwen3", "qwen3", "f32", nil, 24},
		{"q8_0", "llama-32", "q8_0", nil, 24},
		{"head-in-slices", "qwen2", "f32", nil, 250},
		{"attention-only", "qwen2", "f32", []string{"q", "v"}, 24},
		{"lm_head-only", "llama", "f32", []string{"lm_head"}, 24},
	}
	for _, dev := range trDevices() {
		for _, c := range cases {
			t.Run(trOn(dev, c.name), func(t *testing.T) {
				var path string
				if c.model == "llama-32" {
					path = testmodel.Cached(t, trSpecs32["llama"])
				} else {
					path = trModel(t, trFor(dev, c.model))
				}
				m := trLoad(t, path)
				p := TrainParams{Rank: 4, MaxSeqLen: c.n, Seed: 3, Threads: 1, Targets: c.targets, ComputeType: c.ct, GPULayers: dev}
				ref := trNew(t, m, p)
				trRandomize(t, ref, 5, 0.2)
				p.Checkpoint = true
				ck := trNew(t, m, p)
				for _, n := range ref.Params() {
					if err := ck.Set(n, ref.Get(n)); err != nil {
						t.Fatal(err)
					}
				}
				// Two sequences of different lengths accumulate into the same gradients.
				long := trTokens(c.n, m.VocabSize(), 8)
				short := trTokens(9, m.VocabSize(), 9)
				for _, seq := range []struct{ tokens, labels []Token }{{long, trLabels(long, 0, 1, 2, 3)}, {short, trLabels(short, 0, 4)}} {
					refLoss, refGrad := trGrads(t, ref, seq.tokens, seq.labels)
					loss, grad := trGrads(t, ck, seq.tokens, seq.labels)
					le, ge := math.Abs(loss-refLoss)/refLoss, relL2(grad, refGrad)
					t.Logf("%d tokens: loss %.6g vs %.6g, gradients %.3g apart", len(seq.tokens), loss, refLoss, ge)
					if le > 1e-6 || ge > 1e-4 || math.IsNaN(le+ge) {
						t.Fatalf("checkpointed step differs: loss %.3g, gradients %.3g (relative)", le, ge)
					}
				}
				// And the optimiser sees the same thing: one step each, same weights after.
				if _, err := ref.Step(1e-2, 0.01, 1); err != nil {
					t.Fatal(err)
				}
				if _, err := ck.Step(1e-2, 0.01, 1); err != nil {
					t.Fatal(err)
				}
				for _, n := range ref.Params() {
					if e := relErr(ck.Get(n), ref.Get(n)); e > 1e-4 {
						t.Fatalf("%s after a step: %.3g apart", n, e)
					}
				}
			})
		}
	}
}

// Checkpointing keeps one layer's activations instead of all of them: on stories260K
// (five layers, a small vocabulary, so activations dominate) its estimate is much
// smaller, and still what the trainer then holds.
func TestCheckpointingSavesMemory(t *testing.T) {
	m := trLoad(t, trModel(t, "stories"))
	p := TrainParams{Rank: 8, MaxSeqLen: 256, Threads: 1}
	full := EstimateTrainMemory(m.Info, p)
	p.Checkpoint = true
	ck := EstimateTrainMemory(m.Info, p)
	tr := trNew(t, m, p)
	held := tr.Memory()
	t.Logf("estimate %d bytes without checkpointing, %d with; the trainer holds %d", full, ck, held)
	if full == 0 || ck == 0 || float64(ck) > 0.6*float64(full) {
		t.Errorf("checkpointing estimate %d is not well below %d", ck, full)
	}
	if float64(ck) < 0.95*float64(held) || float64(ck) > 1.25*float64(held) {
		t.Errorf("estimate %d bytes, the trainer holds %d", ck, held)
	}
}
