package llama_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

const mergePrompt = "Once upon a time, a little conch said: 请问你是谁? Who are you?"

// runtimeLoRA is an adapter applied at run time by llama.cpp.
type runtimeLoRA struct {
	path  string
	scale float32
}

// mergeLogits returns the logits of every prompt position for model path with the
// adapters applied at run time, computed with an F32 KV cache.
func mergeLogits(t *testing.T, path string, loras ...runtimeLoRA) [][]float32 {
	t.Helper()
	m, err := llama.LoadModel(path, llama.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, err := llama.NewContext(m, llama.ContextParams{NCtx: 256, KVF32: true, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	for _, l := range loras {
		a, err := llama.LoadAdapter(m, l.path)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if err := ctx.SetAdapter(a, l.scale); err != nil {
			t.Fatal(err)
		}
	}
	toks, err := m.Tokenize(mergePrompt, true, false)
	if err != nil {
		t.Fatal(err)
	}
	b := llama.NewBatch(len(toks))
	defer b.Free()
	for i, tk := range toks {
		b.Add(tk, i, 0, true)
	}
	if err := ctx.Decode(b); err != nil {
		t.Fatal(err)
	}
	out := make([][]float32, len(toks))
	for i := range toks {
		out[i] = ctx.Logits(i)
	}
	return out
}

// logitsDiff is the largest absolute difference, and the largest absolute logit of want.
func logitsDiff(got, want [][]float32) (diff, scale float64) {
	for i := range want {
		for j := range want[i] {
			diff = math.Max(diff, math.Abs(float64(got[i][j]-want[i][j])))
			scale = math.Max(scale, math.Abs(float64(want[i][j])))
		}
	}
	return diff, scale
}

func writeAdapter(t *testing.T, base string, spec testmodel.AdapterSpec) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "adapter.gguf")
	if err := testmodel.WriteAdapter(p, base, spec); err != nil {
		t.Fatal(err)
	}
	return p
}

func merge(t *testing.T, p llama.MergeParams) *llama.MergeResult {
	t.Helper()
	if p.Output == "" {
		p.Output = filepath.Join(t.TempDir(), "merged.gguf")
	}
	res, err := llama.Merge(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// The proof of the merge: for each architecture, the merged F32 model gives the logits
// of the base with the same adapter applied by llama.cpp at run time, to float rounding.
func TestMergeMatchesRuntimeAdapter(t *testing.T) {
	for _, arch := range []string{"llama", "qwen2", "qwen3"} {
		t.Run(arch, func(t *testing.T) {
			base := testmodel.Cached(t, testmodel.Tiny(arch))
			ad := writeAdapter(t, base, testmodel.AdapterSpec{Rank: 4, Alpha: 8, Seed: 7})
			const scale = 0.75
			res := merge(t, llama.MergeParams{Base: base, LoRAs: []llama.MergeLoRA{{Path: ad, Scale: scale}}, Type: "f32"})
			if res.Merged != 7*2 || res.Quantized {
				t.Fatalf("merged %d tensors (want 14), quantized %v", res.Merged, res.Quantized)
			}
			plain := mergeLogits(t, base)
			want := mergeLogits(t, base, runtimeLoRA{ad, scale})
			got := mergeLogits(t, res.Output)
			moved, _ := logitsDiff(plain, want)
			diff, sc := logitsDiff(got, want)
			t.Logf("%s: adapter moves logits by up to %.4f; merged vs runtime differ by %.2e (logits up to %.2f)", arch, moved, diff, sc)
			if moved < 0.05 {
				t.Fatalf("the adapter barely changes the logits (%g): the test proves nothing", moved)
			}
			if diff > 1e-4*math.Max(sc, 1) {
				t.Fatalf("merged model differs from base + runtime adapter by %g", diff)
			}
		})
	}
}

// A real (trained) llama model, two adapters with their own scales, and an F16 result.
func TestMergeTwoAdaptersStories(t *testing.T) {
	base, err := testmodel.Stories260K()
	if err != nil {
		t.Skip(err)
	}
	a1 := writeAdapter(t, base, testmodel.AdapterSpec{Rank: 8, Seed: 1, Targets: []string{"q", "v", "down"}})
	a2 := writeAdapter(t, base, testmodel.AdapterSpec{Rank: 2, Alpha: 1, Seed: 2, Targets: []string{"q", "o", "up", "gate"}})
	loras := []llama.MergeLoRA{{Path: a1, Scale: 0.5}, {Path: a2, Scale: -1.5}}
	f32 := merge(t, llama.MergeParams{Base: base, LoRAs: loras, Type: "f32"})
	want := mergeLogits(t, base, runtimeLoRA{a1, 0.5}, runtimeLoRA{a2, -1.5})
	only1 := mergeLogits(t, base, runtimeLoRA{a1, 0.5})
	got := mergeLogits(t, f32.Output)
	if d, _ := logitsDiff(only1, want); d < 0.05 {
		t.Fatalf("the second adapter barely matters (%g)", d)
	}
	if d, sc := logitsDiff(got, want); d > 1e-4*math.Max(sc, 1) {
		t.Fatalf("two-adapter merge differs from runtime by %g (logits up to %g)", d, sc)
	}
	// f16 output: the stories model is F32, so everything else is converted too.
	f16 := merge(t, llama.MergeParams{Base: base, LoRAs: loras, Type: "f16"})
	g, err := llama.Inspect(f16.Output)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range g.Tensors {
		if len(ti.Shape) == 2 && ti.TypeName() != "f16" {
			t.Errorf("%s is %s in an f16 merge", ti.Name, ti.TypeName())
		}
	}
	if d, sc := logitsDiff(mergeLogits(t, f16.Output), want); d > 0.02*sc {
		t.Fatalf("f16 merge differs from runtime by %g (logits up to %g)", d, sc)
	}
}

// A quantised merge stays within a stated tolerance of base + runtime adapter: its
// largest logit error is at most 1.25x (plus 0.01) that of llama.cpp quantising the exact
// F32 merge to the same type, so merging through an F16 intermediate adds nothing that
// matters, and for q8_0 it stays under 5% of the largest logit (these tiny random models
// amplify rounding far more than real ones).
func TestMergeQuantisedTolerance(t *testing.T) {
	for _, tc := range []struct {
		model, typ string
		tol        float64 // of the largest logit
	}{{"llama", "q8_0", 0.05}, {"stories", "q6_k", 0.1}, {"qwen2", "q4_k_m", 1}} {
		var base string
		if tc.model == "stories" {
			var err error
			if base, err = testmodel.Stories260K(); err != nil {
				t.Skip(err)
			}
		} else {
			// F16 bases: the merged weights go through an F16 intermediate.
			spec := testmodel.Tiny(tc.model)
			spec.Type = "f16"
			base = testmodel.Cached(t, spec)
		}
		ad := writeAdapter(t, base, testmodel.AdapterSpec{Rank: 4, Seed: 5, Scale: 0.2})
		plain := mergeLogits(t, base)
		want := mergeLogits(t, base, runtimeLoRA{ad, 1})
		loras := []llama.MergeLoRA{{Path: ad, Scale: 1}}
		res := merge(t, llama.MergeParams{Base: base, LoRAs: loras, Type: tc.typ})
		if !res.Quantized {
			t.Fatalf("%s: merge did not quantise", tc.typ)
		}
		g, err := llama.Inspect(res.Output)
		if err != nil {
			t.Fatal(err)
		}
		if wt, _ := g.Tensor("blk.0.attn_q.weight"); tc.typ == "q8_0" && wt.TypeName() != "q8_0" {
			t.Fatalf("blk.0.attn_q.weight is %s", wt.TypeName())
		}
		exact := merge(t, llama.MergeParams{Base: base, LoRAs: loras, Type: "f32"})
		qexact := filepath.Join(t.TempDir(), "exact-q.gguf")
		if _, err := llama.Quantize(context.Background(), llama.QuantizeParams{Input: exact.Output, Output: qexact, Type: tc.typ}); err != nil {
			t.Fatal(err)
		}
		ref, _ := logitsDiff(mergeLogits(t, qexact), want)
		d, sc := logitsDiff(mergeLogits(t, res.Output), want)
		moved, _ := logitsDiff(plain, want)
		t.Logf("%s %s: merged error %.4f, quantising the exact merge %.4f, adapter effect %.3f, logits up to %.2f",
			tc.model, tc.typ, d, ref, moved, sc)
		if d > 1.25*ref+0.01 || d > tc.tol*sc {
			t.Fatalf("%s %s merge is off by %g (quantising the exact merge: %g, logits up to %g)", tc.model, tc.typ, d, ref, sc)
		}
		if moved < 4*d {
			t.Fatalf("the adapter effect %g is not well above the quantisation error %g: the test proves little", moved, d)
		}
	}
}

// Every base key survives the merge byte for byte (tokenizer arrays included), the
// chat template renders the same, untouched tensors are copied exactly, and the
// provenance keys say what went in.
func TestMergeKeepsMetadata(t *testing.T) {
	base := testmodel.Cached(t, testmodel.Tiny("qwen2"))
	ad := writeAdapter(t, base, testmodel.AdapterSpec{Rank: 4, Seed: 9, Targets: []string{"q", "k", "v"}, Name: "my-adapter"})
	res := merge(t, llama.MergeParams{Base: base, LoRAs: []llama.MergeLoRA{{Path: ad, Scale: 1}}, Type: "f32"})

	bkv, bt := rawGGUF(t, base)
	okv, ot := rawGGUF(t, res.Output)
	for k, v := range bkv {
		if string(okv[k]) != string(v) {
			t.Errorf("key %s changed or lost", k)
		}
	}
	for k := range okv {
		if _, ok := bkv[k]; !ok && !strings.HasPrefix(k, "conch.merge.") {
			t.Errorf("unexpected new key %s", k)
		}
	}
	if len(bkv) < 20 {
		t.Fatalf("only %d keys read from the base", len(bkv))
	}
	for name, data := range bt {
		touched := strings.Contains(name, "attn_q.weight") || strings.Contains(name, "attn_k.weight") || strings.Contains(name, "attn_v.weight")
		if same := string(ot[name]) == string(data); same == touched {
			t.Errorf("tensor %s: touched=%v but identical=%v", name, touched, same)
		}
	}

	g, err := llama.Inspect(res.Output)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(mustRead(t, base))
	asum := sha256.Sum256(mustRead(t, ad))
	for k, want := range map[string]any{
		"conch.merge.base.sha256":         hex.EncodeToString(sum[:]),
		"conch.merge.base.file":           filepath.Base(base),
		"conch.merge.lora.count":          uint32(1),
		"conch.merge.lora.0.sha256":       hex.EncodeToString(asum[:]),
		"conch.merge.lora.0.rank":         uint32(4),
		"conch.merge.lora.0.alpha":        float32(8),
		"conch.merge.lora.0.scale":        float32(1),
		"conch.merge.lora.0.general.name": "my-adapter",
		"conch.merge.type":                "f32",
	} {
		if g.KV[k] != want {
			t.Errorf("%s = %v (%T), want %v", k, g.KV[k], g.KV[k], want)
		}
	}

	bm, err := llama.LoadModel(base, llama.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bm.Close()
	mm, err := llama.LoadModel(res.Output, llama.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer mm.Close()
	if bm.ChatTemplate() == "" || mm.ChatTemplate() != bm.ChatTemplate() {
		t.Fatal("chat template lost or changed")
	}
	msgs := []llama.Message{{Role: "system", Content: "You are Conch."}, {Role: "user", Content: "你好"}}
	b1, err1 := bm.ApplyChatTemplate("", msgs, true)
	b2, err2 := mm.ApplyChatTemplate("", msgs, true)
	if err1 != nil || err2 != nil || b1 != b2 || !strings.Contains(b2, "<|im_start|>user\n你好") {
		t.Fatalf("chat rendering differs: %q / %q (%v %v)", b1, b2, err1, err2)
	}
	if bm.EOS() != mm.EOS() || bm.VocabSize() != mm.VocabSize() {
		t.Fatal("special tokens or vocabulary changed")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A quantised base (the usual download) merges too: adapted weights are dequantised, merged
// in F32 and requantised; the others are copied byte for byte when the type stays.
func TestMergeQuantisedBase(t *testing.T) {
	f32 := testmodel.Cached(t, testmodel.Tiny("llama"))
	qbase := filepath.Join(t.TempDir(), "base-q8_0.gguf")
	if _, err := llama.Quantize(context.Background(), llama.QuantizeParams{Input: f32, Output: qbase, Type: "q8_0"}); err != nil {
		t.Fatal(err)
	}
	ad := writeAdapter(t, f32, testmodel.AdapterSpec{Rank: 4, Seed: 3, Scale: 0.2, Targets: []string{"q", "v", "up"}})
	want := mergeLogits(t, qbase, runtimeLoRA{ad, 1})
	moved, _ := logitsDiff(mergeLogits(t, qbase), want)
	bg, _ := llama.Inspect(qbase)
	// The reference for an f16 output is the base dequantised to f16 plus the runtime
	// adapter: with q8_0 weights llama.cpp also rounds the activations to 8 bits.
	fbase := filepath.Join(t.TempDir(), "base-f16.gguf")
	if _, err := llama.Quantize(context.Background(), llama.QuantizeParams{Input: qbase, Output: fbase, Type: "f16"}); err != nil {
		t.Fatal(err)
	}
	wantF16 := mergeLogits(t, fbase, runtimeLoRA{ad, 1})
	for _, tc := range []struct {
		typ  string
		tol  float64
		want [][]float32
	}{{"q8_0", 0.05, want}, {"f16", 0.002, wantF16}} {
		res := merge(t, llama.MergeParams{Base: qbase, LoRAs: []llama.MergeLoRA{{Path: ad, Scale: 1}}, Type: tc.typ})
		d, sc := logitsDiff(mergeLogits(t, res.Output), tc.want)
		t.Logf("q8_0 base to %s: error %.4f, adapter effect %.3f, logits up to %.2f", tc.typ, d, moved, sc)
		if d > tc.tol*sc || moved < 4*d {
			t.Fatalf("%s: off by %g (effect %g)", tc.typ, d, moved)
		}
		g, err := llama.Inspect(res.Output)
		if err != nil {
			t.Fatal(err)
		}
		if tc.typ != "q8_0" {
			for _, ti := range g.Tensors {
				if len(ti.Shape) == 2 && ti.TypeName() != tc.typ {
					t.Fatalf("%s is %s", ti.Name, ti.TypeName())
				}
			}
			continue
		}
		// Untouched q8_0 tensors: the same bytes (rawGGUF skips quantised data, so read them here).
		raw := mustRead(t, res.Output)
		braw := mustRead(t, qbase)
		same := 0
		for _, ti := range g.Tensors {
			b, _ := bg.Tensor(ti.Name)
			touched := strings.Contains(ti.Name, "attn_q.") || strings.Contains(ti.Name, "attn_v.") || strings.Contains(ti.Name, "ffn_up.")
			eq := ti.Type == b.Type && string(raw[g.DataOffset+int64(ti.Offset):][:ti.Size]) == string(braw[bg.DataOffset+int64(b.Offset):][:b.Size])
			if eq == touched {
				t.Fatalf("%s: touched %v, identical %v", ti.Name, touched, eq)
			}
			if eq && ti.TypeName() == "q8_0" {
				same++
			}
		}
		if same == 0 {
			t.Fatal("no untouched q8_0 tensor to compare")
		}
	}
}
