package llama

import (
	"math"
	"testing"
)

// NEFTune's noise reaches training runs only, is drawn from the seed set for the
// sequence (the same seed, the same loss and gradients, on any trainer), and its size
// grows with alpha.
func TestTrainerNEFTune(t *testing.T) {
	m := trLoad(t, trModel(t, "llama"))
	tokens := trTokens(16, m.VocabSize(), 6)
	labels := trLabels(tokens, 0, 1)
	run := func(alpha float32, seed uint64) (float64, []float64, float64) {
		tr := trNew(t, m, TrainParams{Rank: 4, MaxSeqLen: 16, Seed: 2, Threads: 1, NEFTuneAlpha: alpha})
		trRandomize(t, tr, 3, 0.1)
		tr.SetNoiseSeed(seed)
		loss, grad := trGrads(t, tr, tokens, labels)
		eval, _, err := tr.Eval(tokens, labels)
		if err != nil {
			t.Fatal(err)
		}
		tr.Close()
		return loss, grad, eval
	}
	plain, plainGrad, plainEval := run(0, 1)
	if plain != plainEval {
		t.Fatalf("without noise the training loss %v differs from the eval loss %v", plain, plainEval)
	}
	a, aGrad, aEval := run(5, 1)
	b, bGrad, _ := run(5, 1)
	c, _, _ := run(5, 2)
	small, _, _ := run(0.002, 1)
	double, _, _ := run(0.004, 1)
	t.Logf("loss: plain %.6g; alpha 5: %.6g (seed 2: %.6g); alpha 0.002: %.6g", plain, a, c, small)
	if aEval != plainEval {
		t.Errorf("eval loss %v with NEFTune, %v without: evaluation must see no noise", aEval, plainEval)
	}
	if a != b || relL2(aGrad, bGrad) != 0 {
		t.Errorf("the same seed gave losses %v and %v", a, b)
	}
	if a == c || a == plain {
		t.Errorf("noise does not change with the seed or at all: %v, %v, plain %v", a, c, plain)
	}
	if relL2(aGrad, plainGrad) < 1e-4 {
		t.Errorf("alpha 5 barely changes the gradients (%.3g)", relL2(aGrad, plainGrad))
	}
	// Small noise moves the loss in proportion to alpha (to first order): twice the
	// alpha, twice the change.
	d1, d2 := small-plain, double-plain
	t.Logf("loss moved by %.4g with alpha 0.002, %.4g with alpha 0.004", d1, d2)
	if d1 == 0 || math.Abs(d2/d1-2) > 0.1 {
		t.Errorf("loss moved by %.4g with alpha 0.002 and %.4g with alpha 0.004, not twice as much", d1, d2)
	}
}
