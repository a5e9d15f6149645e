package llama

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
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
	if name == "qwen3-hd32" {
		return testmodel.Cached(t, trQwen3HD32)
	}
	return testmodel.Cached(t, testmodel.Tiny(name))
}

// trQwen3HD32 is a qwen3 whose heads are 32 wide: CUDA's RMS_NORM_BACK (the q/k norms'
// gradient) needs rows of a multiple of 32, which tiny-qwen3's 16-wide heads are not.
var trQwen3HD32 = testmodel.Spec{Name: "tiny-qwen3-hd32", Arch: "qwen3", NEmbd: 64, NLayer: 2, NHead: 2, NHeadKV: 1, HeadDim: 32, NFF: 128, Tied: true, Seed: 1}

// trFor is the model a trainer test uses on a device: the GPU gets the qwen3 it can
// train (gpu_test.go checks that it refuses tiny-qwen3 with a clear error).
func trFor(gpuLayers int, name string) string {
	if gpuLayers != 0 && name == "qwen3" {
		return "qwen3-hd32"
	}
	return name
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

// trAllWithHead is every target: the seven projections and the output head.
var trAllWithHead = []string{"q", "k", "v", "o", "gate", "up", "down", "lm_head"}

// trDevices are the places trainer proofs run: the CPU, and the GPU too when this is a
// CUDA build on a machine with one (GPULayers -1).
func trDevices() []int {
	if GPUCount() > 0 {
		return []int{0, -1}
	}
	return []int{0}
}

// trOn names a subtest for a device: CPU names stay as they were.
func trOn(gpuLayers int, name string) string {
	if gpuLayers == 0 {
		return name
	}
	return "gpu-" + name
}

func TestTrainerLogitsMatchLlamaCpp(t *testing.T) {
	for _, dev := range trDevices() {
		for _, c := range []struct {
			name, model string
			targets     []string
		}{
			{"stories", "stories", nil},
			{"stories-lm_head", "stories", []string{"lm_head"}},
			{"llama-all-lm_head", "llama", trAllWithHead},
			{"qwen2", "qwen2", nil},
			{"qwen3", "qwen3", nil},
		} {
			t.Run(trOn(dev, c.name), func(t *testing.T) { trLogitsParity(t, trFor(dev, c.model), c.targets, dev) })
		}
	}
}

// trLogitsParity checks the trainer's forward against llama.cpp's on the CPU, with
// B = 0 and with a random adapter saved and applied by llama.cpp.
func trLogitsParity(t *testing.T, model string, targets []string, gpuLayers int) {
	path := trModel(t, model)
	m := trLoad(t, path)
	tr := trNew(t, m, TrainParams{Rank: 4, Alpha: 8, MaxSeqLen: 32, Seed: 1, Targets: targets, GPULayers: gpuLayers})
	if head := slices.Contains(tr.Params(), "output.weight.lora_b"); head != slices.Contains(targets, "lm_head") {
		t.Fatalf("output.weight LoRA present: %v, targets %v", head, targets)
	}
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
	trRandomize(t, tr, 3, 0.05)
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
}

// trRandomize sets every LoRA tensor to N(0, std) values (B too, so that A has a gradient).
func trRandomize(t *testing.T, tr *Trainer, seed uint64, std float64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 5))
	for _, name := range tr.Params() {
		v := tr.Get(name)
		for i := range v {
			v[i] = float32(r.NormFloat64() * std)
		}
		if err := tr.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
}

// trLabels predicts the next token at every position except the masked ones and the last.
func trLabels(tokens []Token, masked ...int) []Token {
	labels := make([]Token, len(tokens))
	for i := range labels {
		if i+1 < len(tokens) {
			labels[i] = tokens[i+1]
		} else {
			labels[i] = -1
		}
	}
	for _, i := range masked {
		labels[i] = -1
	}
	return labels
}

// trLongAttention is a model whose attention products are big enough (head size 64, 80
// tokens) for the trainer to run their backward as matrix products (train_graph.cpp).
var trLongAttention = testmodel.Spec{Name: "tiny-llama-hd64", Arch: "llama", NEmbd: 128, NLayer: 2, NHead: 2, NHeadKV: 1, NFF: 128, Seed: 7}

func TestTrainerGradientsFiniteDifferences(t *testing.T) {
	for _, dev := range trDevices() {
		for _, name := range []string{"llama", "qwen2", "qwen3", "long-attention", "lm_head"} {
			t.Run(trOn(dev, name), func(t *testing.T) { trFiniteDifferences(t, trFor(dev, name), dev) })
		}
	}
}

// trFiniteDifferences compares backward gradients with central differences of the loss.
func trFiniteDifferences(t *testing.T, name string, gpuLayers int) {
	path, n := "", 12
	var targets []string
	switch name {
	case "long-attention":
		path, n = testmodel.Cached(t, trLongAttention), 80
	case "lm_head":
		// the output pair is last: the checked tensors below include both halves
		path, targets = trModel(t, "llama"), trAllWithHead
	default:
		path = trModel(t, name)
	}
	m := trLoad(t, path)
	tr := trNew(t, m, TrainParams{Rank: 4, Alpha: 8, MaxSeqLen: n, Seed: 2, Threads: 1, Targets: targets, GPULayers: gpuLayers})
	trRandomize(t, tr, 9, 0.2)
	tokens := trTokens(n, m.VocabSize(), 3)
	labels := trLabels(tokens, 0, 1, 2, 6) // a masked prompt and a masked hole
	loss, sup, err := tr.Accumulate(tokens, labels)
	if err != nil {
		t.Fatal(err)
	}
	if sup != n-5 {
		t.Fatalf("%d supervised positions, want %d", sup, n-5)
	}
	if l2, n2, _ := tr.Eval(tokens, labels); math.Abs(l2-loss) > 1e-5*math.Abs(loss) || n2 != sup {
		t.Fatalf("Eval %v/%d differs from Accumulate %v/%d", l2, n2, loss, sup)
	}

	// Five-point central differences (truncation error O(h^4), so h can be large
	// enough for the F32 loss's rounding not to matter) on the entries with the
	// largest gradients of a few tensors: A and B, attention and MLP, first and
	// last layer.
	const h = 1e-2
	names := tr.Params()
	if targets != nil && (names[len(names)-2] != "output.weight.lora_a" || names[len(names)-1] != "output.weight.lora_b") {
		t.Fatalf("the output head's pair is not last: %v", names[len(names)-2:])
	}
	worst := 0.0
	for _, pn := range []string{names[0], names[1], names[5], names[len(names)-2], names[len(names)-1], names[len(names)/2]} {
		g := tr.Grad(pn)
		v := tr.Get(pn)
		for _, i := range trTopK(g, 3) {
			orig := v[i]
			at := func(d float32) float64 {
				v[i] = orig + d
				if err := tr.Set(pn, v); err != nil {
					t.Fatal(err)
				}
				l, _, err := tr.Eval(tokens, labels)
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			fd := (8*(at(h)-at(-h)) - (at(2*h) - at(-2*h))) / (12 * h)
			at(0)
			rel := math.Abs(fd-float64(g[i])) / math.Max(math.Abs(float64(g[i])), 1e-3)
			worst = math.Max(worst, rel)
			if rel > 1e-2 {
				t.Errorf("%s[%d]: backward %.6g, finite difference %.6g (rel. err %.3g)", pn, i, g[i], fd, rel)
			}
		}
	}
	t.Logf("worst relative error %.3g", worst)
}

// trTopK returns the indices of the k largest |g|.
func trTopK(g []float32, k int) []int {
	var idx []int
	for n := 0; n < k; n++ {
		best := -1
		for i := range g {
			if slicesContains(idx, i) {
				continue
			}
			if best < 0 || math.Abs(float64(g[i])) > math.Abs(float64(g[best])) {
				best = i
			}
		}
		idx = append(idx, best)
	}
	return idx
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestTrainerMaskedAndAccumulated(t *testing.T) {
	m := trLoad(t, trModel(t, "llama"))
	tr := trNew(t, m, TrainParams{Rank: 2, MaxSeqLen: 16, Seed: 2})
	trRandomize(t, tr, 4, 0.1)
	tokens := trTokens(10, m.VocabSize(), 5)
	none := make([]Token, len(tokens))
	for i := range none {
		none[i] = -1
	}
	loss, n, err := tr.Accumulate(tokens, none)
	if err != nil || n != 0 || loss != 0 {
		t.Fatalf("all masked: loss %v, n %d, err %v", loss, n, err)
	}
	for _, p := range tr.Params() {
		for _, x := range tr.Grad(p) {
			if x != 0 {
				t.Fatalf("all masked: %s has a non-zero gradient", p)
			}
		}
	}
	if gn, err := tr.Step(1e-3, 0, 0); err != nil || gn != 0 || tr.StepCount() != 0 {
		t.Fatalf("step with nothing accumulated: norm %v, steps %d, err %v", gn, tr.StepCount(), err)
	}

	// Two sequences accumulate to the sum of their gradients.
	a, b := trLabels(tokens, 0), trLabels(tokens, 5, 6, 7)
	p := tr.Params()[3]
	tr.Accumulate(tokens, a)
	ga := tr.Grad(p)
	tr.Accumulate(tokens, b)
	gab := tr.Grad(p)
	tr2 := trNew(t, m, TrainParams{Rank: 2, MaxSeqLen: 16, Seed: 2})
	for _, name := range tr.Params() {
		tr2.Set(name, tr.Get(name))
	}
	tr2.Accumulate(tokens, b)
	gb := tr2.Grad(p)
	for i := range gab {
		if d := math.Abs(float64(gab[i] - (ga[i] + gb[i]))); d > 1e-6*(1+math.Abs(float64(gab[i]))) {
			t.Fatalf("accumulated gradient %v != %v + %v", gab[i], ga[i], gb[i])
		}
	}
}

func TestTrainerAdamWMatchesReference(t *testing.T) {
	// ratio: LoRA+, the B halves stepping 4 times as fast
	for _, ratio := range []float32{0, 4} {
		t.Run(fmt.Sprintf("lr-ratio-b-%g", ratio), func(t *testing.T) { trAdamW(t, ratio) })
	}
}

func trAdamW(t *testing.T, ratioB float32) {
	m := trLoad(t, trModel(t, "llama"))
	tr := trNew(t, m, TrainParams{Rank: 2, MaxSeqLen: 16, Seed: 3, Threads: 1, Beta1: 0.8, Beta2: 0.95, Eps: 1e-6, LRRatioB: ratioB})
	trRandomize(t, tr, 6, 0.05)
	tokens := trTokens(12, m.VocabSize(), 8)
	const b1, b2, eps = 0.8, 0.95, 1e-6
	names := tr.Params()
	p := map[string][]float64{}
	mm := map[string][]float64{}
	vv := map[string][]float64{}
	for _, n := range names {
		p[n] = f64s(tr.Get(n))
		mm[n] = make([]float64, len(p[n]))
		vv[n] = make([]float64, len(p[n]))
	}
	for step := 1; step <= 3; step++ {
		n1 := trAccumulate(t, tr, tokens, trLabels(tokens, 0, 1))
		n2 := trAccumulate(t, tr, tokens[:8], trLabels(tokens[:8], 3))
		N := float64(n1 + n2)
		acc := map[string][]float64{}
		sq := 0.0
		for _, n := range names {
			acc[n] = f64s(tr.Grad(n))
			for _, x := range acc[n] {
				sq += x * x
			}
		}
		norm := math.Sqrt(sq) / N
		lr, wd, maxNorm := float32(0.01), float32(0.1), float32(0)
		if step == 2 {
			maxNorm = float32(norm / 3) // clipping active
		}
		got, err := tr.Step(lr, wd, maxNorm)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got-norm) > 1e-9*norm {
			t.Fatalf("step %d: grad norm %v, host %v", step, got, norm)
		}
		clip := 1.0
		if maxNorm > 0 && norm > float64(maxNorm) {
			clip = float64(maxNorm) / norm
		}
		worst := 0.0
		for _, n := range names {
			after := tr.Get(n)
			for i := range after {
				g := acc[n][i] * clip / N
				mm[n][i] = b1*mm[n][i] + (1-b1)*g
				vv[n][i] = b2*vv[n][i] + (1-b2)*g*g
				mh := mm[n][i] / (1 - math.Pow(b1, float64(step)))
				vh := vv[n][i] / (1 - math.Pow(b2, float64(step)))
				lrn := float64(lr)
				if ratioB > 0 && strings.HasSuffix(n, ".lora_b") {
					lrn *= float64(ratioB)
				}
				p[n][i] = p[n][i]*(1-lrn*float64(wd)) - lrn*mh/(math.Sqrt(vh)+eps)
				worst = math.Max(worst, math.Abs(float64(after[i])-p[n][i]))
			}
		}
		// Every update moves a parameter by about lr: 1e-6 is float32 rounding.
		if worst > 2e-6*math.Max(1, float64(ratioB)) {
			t.Fatalf("step %d: parameters differ from the host AdamW by %.3g", step, worst)
		}
		if tr.StepCount() != step {
			t.Fatalf("StepCount %d, want %d", tr.StepCount(), step)
		}
		for _, n := range names {
			for _, x := range tr.Grad(n) {
				if x != 0 {
					t.Fatalf("gradient of %s not cleared by Step", n)
				}
			}
		}
	}
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func trAccumulate(t *testing.T, tr *Trainer, tokens, labels []Token) int {
	t.Helper()
	_, n, err := tr.Accumulate(tokens, labels)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTrainerResumeIsBitExact(t *testing.T) {
	path := trModel(t, "llama")
	m := trLoad(t, path)
	params := TrainParams{Rank: 4, Alpha: 8, MaxSeqLen: 16, Seed: 11, Threads: 1}
	tokens := trTokens(16, m.VocabSize(), 21)
	seqs := [][2][]Token{
		{tokens, trLabels(tokens, 0, 1, 2)},
		{tokens[4:], trLabels(tokens[4:], 0)},
	}
	// one step = both sequences; the resumed run saves between them (pending gradients)
	const steps = 4
	run := func(tr *Trainer, from, to int, stopEarly bool) {
		for s := from; s < to; s++ {
			for j, q := range seqs {
				if stopEarly && s == to-1 && j == 1 {
					return
				}
				trAccumulate(t, tr, q[0], q[1])
			}
			if _, err := tr.Step(5e-3, 0.01, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	straight := trNew(t, m, params)
	run(straight, 0, steps, false)

	first := trNew(t, m, params)
	run(first, 0, steps/2+1, true) // two steps, then half of the third
	state := filepath.Join(t.TempDir(), "state.gguf")
	if err := first.SaveState(state); err != nil {
		t.Fatal(err)
	}
	first.Close()
	resumed := trNew(t, m, TrainParams{Rank: 4, Alpha: 8, MaxSeqLen: 16, Seed: 99, Threads: 1})
	if err := resumed.LoadState(state); err != nil {
		t.Fatal(err)
	}
	if resumed.StepCount() != steps/2 {
		t.Fatalf("resumed at step %d, want %d", resumed.StepCount(), steps/2)
	}
	trAccumulate(t, resumed, seqs[1][0], seqs[1][1])
	if _, err := resumed.Step(5e-3, 0.01, 1); err != nil {
		t.Fatal(err)
	}
	run(resumed, steps/2+1, steps, false)
	for _, n := range straight.Params() {
		a, b := straight.Get(n), resumed.Get(n)
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				t.Fatalf("%s[%d]: straight %v, resumed %v", n, i, a[i], b[i])
			}
		}
	}
	if straight.StepCount() != resumed.StepCount() {
		t.Fatalf("steps %d vs %d", straight.StepCount(), resumed.StepCount())
	}

	// A state belongs to its model, rank and targets.
	other := trNew(t, m, TrainParams{Rank: 2, MaxSeqLen: 16})
	if err := other.LoadState(state); err == nil {
		t.Fatal("a rank-4 state loaded into a rank-2 trainer")
	}
	fewer := trNew(t, m, TrainParams{Rank: 4, Alpha: 8, MaxSeqLen: 16, Targets: []string{"q", "v"}})
	if err := fewer.LoadState(state); err == nil {
		t.Fatal("a state for all targets loaded into a q,v trainer")
	}
	if err := other.LoadState(path); err == nil {
		t.Fatal("a model file loaded as a training state")
	}
	sm := trLoad(t, trModel(t, "stories"))
	st := trNew(t, sm, TrainParams{Rank: 4, Alpha: 8, MaxSeqLen: 16})
	if err := st.LoadState(state); err == nil {
		t.Fatal("a state for one model loaded into a trainer for another")
	}
}

func TestTrainerLearnsASequence(t *testing.T) {
	for _, dev := range trDevices() {
		t.Run(trOn(dev, "stories"), func(t *testing.T) { trLearns(t, dev) })
	}
}

func trLearns(t *testing.T, gpuLayers int) {
	m := trLoad(t, trModel(t, "stories"))
	tr := trNew(t, m, TrainParams{Rank: 8, MaxSeqLen: 64, Seed: 1, Threads: 1, GPULayers: gpuLayers})
	tokens, err := m.Tokenize("The magic conch says: maybe someday. Nothing at all.", true, false)
	if err != nil {
		t.Fatal(err)
	}
	labels := trLabels(tokens)
	first := 0.0
	var last float64
	for step := 0; step < 40; step++ {
		loss, n, err := tr.Accumulate(tokens, labels)
		if err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = loss / float64(n)
		}
		last = loss / float64(n)
		if _, err := tr.Step(1e-2, 0, 1); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("mean loss %.3f -> %.3f", first, last)
	if !(last < 0.2*first) {
		t.Fatalf("loss went from %.3f to %.3f: not learning", first, last)
	}
}

func TestTrainerRejectsBadInput(t *testing.T) {
	for _, a := range []string{"llama", "qwen2", "qwen3"} {
		if !TrainableArch(a) {
			t.Errorf("TrainableArch(%q) = false", a)
		}
	}
	if TrainableArch("gemma3") || TrainableArch("") {
		t.Error("TrainableArch accepts gemma3 or an empty name")
	}
	m := trLoad(t, trModel(t, "llama"))
	for _, p := range []TrainParams{
		{Rank: -1}, {Alpha: -2}, {MaxSeqLen: 1 << 20}, {ComputeType: "int4"}, {Targets: []string{"q", "embed"}},
		{Beta1: 1}, {Eps: -1}, {GPULayers: -2}, {GPULayers: 1},
	} {
		if p.GPULayers == 1 && GPUCount() > 0 {
			continue
		}
		if tr, err := NewTrainer(m, p); err == nil {
			tr.Close()
			t.Errorf("NewTrainer(%+v) succeeded", p)
		} else if EstimateTrainMemory(m.Info, p) != 0 {
			t.Errorf("EstimateTrainMemory(%+v) is not 0 for settings NewTrainer refuses", p)
		}
	}
	// A tied output head is token_embd.weight, whose adapter llama.cpp would also apply
	// to the embedding lookup: lm_head is refused there with a message that says so.
	tied := trLoad(t, trModel(t, "qwen2"))
	p := TrainParams{Rank: 2, MaxSeqLen: 8, Targets: []string{"q", "lm_head"}}
	if tr, err := NewTrainer(tied, p); err == nil || !strings.Contains(err.Error(), "token_embd") {
		if tr != nil {
			tr.Close()
		}
		t.Errorf("lm_head on a tied model: %v", err)
	}
	if EstimateTrainMemory(tied.Info, p) != 0 {
		t.Error("EstimateTrainMemory plans lm_head on a tied model")
	}
	tr := trNew(t, m, TrainParams{Rank: 2, MaxSeqLen: 8, Targets: []string{"q", "v"}})
	if n := len(tr.Params()); n != 2*2*2 {
		t.Fatalf("%d LoRA tensors for q,v on 2 layers, want 8", n)
	}
	v := Token(m.VocabSize())
	ok := []Token{1, 2, 3}
	for _, c := range []struct{ tokens, labels []Token }{
		{nil, nil}, {ok, []Token{1, 2}}, {[]Token{1, v, 2}, ok}, {[]Token{-1, 2, 3}, ok},
		{ok, []Token{1, v, 2}}, {ok, []Token{1, -2, 2}}, {make([]Token, 9), make([]Token, 9)},
	} {
		if _, _, err := tr.Accumulate(c.tokens, c.labels); err == nil {
			t.Errorf("Accumulate(%v, %v) succeeded", c.tokens, c.labels)
		}
		if _, _, err := tr.Eval(c.tokens, c.labels); err == nil {
			t.Errorf("Eval(%v, %v) succeeded", c.tokens, c.labels)
		}
	}
	if _, err := tr.Logits([]Token{0, v}); err == nil {
		t.Error("Logits accepted a token outside the vocabulary")
	}
	if _, err := tr.Step(-1, 0, 0); err == nil {
		t.Error("Step accepted a negative learning rate")
	}
	if err := tr.Set("blk.0.attn_q.weight.lora_a", []float32{1}); err == nil {
		t.Error("Set accepted a slice of the wrong length")
	}
	if err := tr.Set("nope", nil); err == nil || tr.Get("nope") != nil || tr.Grad("nope") != nil {
		t.Error("unknown tensor names are not refused")
	}
	dir := t.TempDir()
	for _, meta := range []map[string]string{{"general.type": "model"}, {"adapter.lora.alpha": "3"}, {"general.alignment": "8"}, {"a\x00b": "x"}} {
		if err := tr.SaveAdapter(filepath.Join(dir, "a.gguf"), meta); err == nil {
			t.Errorf("SaveAdapter accepted metadata %q", meta)
		}
	}
	if err := tr.SaveAdapter(filepath.Join(dir, "missing", "a.gguf"), nil); err == nil {
		t.Error("SaveAdapter into a missing folder succeeded")
	}
	tr.Close()
	if _, _, err := tr.Accumulate(ok, ok); err == nil {
		t.Error("Accumulate on a closed trainer succeeded")
	}
}

func TestEstimateTrainMemory(t *testing.T) {
	for _, c := range []struct{ name, ct string }{{"llama", "f32"}, {"qwen2", "f32"}, {"qwen2", "f16"}, {"llama", "q8_0"}} {
		name := c.name
		m := trLoad(t, trModel(t, name))
		p := TrainParams{Rank: 8, MaxSeqLen: 64, Threads: 1, ComputeType: c.ct}
		est := EstimateTrainMemory(m.Info, p)
		tr := trNew(t, m, p)
		got := tr.Memory()
		t.Logf("%s %s: estimate %d, trainer holds %d", name, c.ct, est, got)
		if float64(est) < 0.95*float64(got) || float64(est) > 1.25*float64(got) {
			t.Errorf("%s %s: estimate %d bytes, the trainer holds %d", name, c.ct, est, got)
		}
		tr.Close()
		if e2 := EstimateTrainMemory(m.Info, TrainParams{Rank: 8, MaxSeqLen: 256}); e2 <= est {
			t.Errorf("%s: estimate does not grow with MaxSeqLen (%d <= %d)", name, e2, est)
		}
	}
}
