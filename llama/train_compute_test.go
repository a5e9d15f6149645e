package llama

import (
	"math"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
)

// Models whose every dimension is a multiple of 32, as q8_0 needs.
var trSpecs32 = map[string]testmodel.Spec{
	"llama": {Name: "tiny-llama-32", Arch: "llama", NEmbd: 64, NLayer: 2, NHead: 2, NHeadKV: 1, NFF: 128, Seed: 5},
	"qwen2": {Name: "tiny-qwen2-32", Arch: "qwen2", NEmbd: 64, NLayer: 2, NHead: 2, NHeadKV: 1, NFF: 128, Tied: true, Seed: 5},
}

// trGrads accumulates one sequence and returns the loss sum and every gradient, in the
// order of Params.
func trGrads(t *testing.T, tr *Trainer, tokens, labels []Token) (float64, []float64) {
	t.Helper()
	loss, _, err := tr.Accumulate(tokens, labels)
	if err != nil {
		t.Fatal(err)
	}
	var g []float64
	for _, n := range tr.Params() {
		g = append(g, f64s(tr.Grad(n))...)
	}
	return loss, g
}

func relL2(a, ref []float64) float64 {
	var d, n float64
	for i := range ref {
		d += (a[i] - ref[i]) * (a[i] - ref[i])
		n += ref[i] * ref[i]
	}
	return math.Sqrt(d / n)
}

// The faster compute types must agree with the F32 reference on loss and gradients,
// within the rounding their matrix products add.
func TestTrainerComputeTypesMatchF32(t *testing.T) {
	limits := map[string]struct{ loss, grad float64 }{
		"f16": {1e-3, 1e-2}, "bf16": {1e-2, 5e-2}, "q8_0": {1e-2, 1e-1},
	}
	for _, arch := range []string{"llama", "qwen2"} {
		t.Run(arch, func(t *testing.T) {
			m := trLoad(t, testmodel.Cached(t, trSpecs32[arch]))
			tokens := trTokens(16, m.VocabSize(), 4)
			labels := trLabels(tokens, 0, 1, 2)
			p := TrainParams{Rank: 4, MaxSeqLen: 16, Seed: 1, Threads: 1}
			if arch == "llama" {
				p.Targets = trAllWithHead // untied: the output head's LoRA too
			}
			ref := trNew(t, m, p)
			trRandomize(t, ref, 12, 0.1)
			refLoss, refGrad := trGrads(t, ref, tokens, labels)
			refLogits, _ := ref.Logits(tokens)
			for _, ct := range []string{"f16", "bf16", "q8_0"} {
				p.ComputeType = ct
				tr := trNew(t, m, p)
				for _, n := range ref.Params() {
					tr.Set(n, ref.Get(n))
				}
				loss, grad := trGrads(t, tr, tokens, labels)
				logits, err := tr.Logits(tokens)
				if err != nil {
					t.Fatal(err)
				}
				le, ge, fe := math.Abs(loss-refLoss)/refLoss, relL2(grad, refGrad), relErr(logits, refLogits)
				t.Logf("%s: loss %.3g, gradients %.3g, logits %.3g relative to f32", ct, le, ge, fe)
				if le > limits[ct].loss || ge > limits[ct].grad || fe > limits[ct].grad || math.IsNaN(le+ge+fe) {
					t.Errorf("%s differs from f32: loss %.3g, gradients %.3g, logits %.3g", ct, le, ge, fe)
				}
				tr.Close()
			}
		})
	}
}

// On an F16 model file the f16 compute type runs the same products as llama.cpp.
func TestTrainerF16MatchesLlamaCpp(t *testing.T) {
	s := testmodel.Tiny("qwen3")
	s.Name, s.Type = "tiny-qwen3-f16", "f16"
	m := trLoad(t, testmodel.Cached(t, s))
	tr := trNew(t, m, TrainParams{Rank: 4, MaxSeqLen: 32, ComputeType: "f16", Threads: 1})
	tokens := trTokens(20, m.VocabSize(), 2)
	got, err := tr.Logits(tokens)
	if err != nil {
		t.Fatal(err)
	}
	e := relErr(got, llamaAllLogits(t, m, tokens, nil))
	t.Logf("relative error %.3g", e)
	if e > 1e-4 || math.IsNaN(e) {
		t.Fatalf("f16 logits differ from llama.cpp's by %.3g", e)
	}
	narrow := trLoad(t, trModel(t, "qwen2"))
	if _, err := NewTrainer(narrow, TrainParams{ComputeType: "q8_0"}); err == nil {
		t.Fatal("q8_0 accepted for a model with 16-wide key/value rows")
	}
}
