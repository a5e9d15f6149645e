package llama

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
)

func mathFloat32bits(f float32) uint32 { return math.Float32bits(f) }

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

func TestBadModelFiles(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(stories(t))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unknownArch := filepath.Join(dir, "mamba.gguf")
	writeGGUF(t, unknownArch, []ggufKV{{"general.architecture", "mamba9"}}, map[string][]int64{"token_embd.weight": {8, 4}})
	adapter := filepath.Join(dir, "adapter.gguf")
	writeGGUF(t, adapter, []ggufKV{{"general.architecture", "llama"}, {"general.type", "adapter"}, {"adapter.type", "lora"}},
		map[string][]int64{"blk.0.attn_q.weight.lora_a": {64, 4}})
	noTensors := filepath.Join(dir, "empty.gguf")
	writeGGUF(t, noTensors, []ggufKV{{"general.architecture", "llama"}}, nil)
	badHeads := filepath.Join(dir, "heads.gguf")
	writeGGUF(t, badHeads, []ggufKV{{"general.architecture", "llama"}, {"llama.embedding_length", uint32(64)},
		{"llama.attention.head_count", uint32(6)}}, map[string][]int64{"token_embd.weight": {64, 4}})

	cases := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.gguf"), "no such file"},
		{"directory", dir, "is a directory"},
		{"not gguf", write("text.gguf", []byte("hello, this is not a model")), "not a GGUF file"},
		{"empty", write("zero.gguf", nil), "not a GGUF file"},
		{"truncated header", write("head.gguf", good[:200]), "truncated"},
		{"truncated data", write("half.gguf", good[:len(good)/2]), "truncated"},
		{"bad version", write("ver.gguf", append(append([]byte{}, good[:4]...), append([]byte{9, 0, 0, 0}, good[8:]...)...)), "unsupported GGUF version 9"},
		{"unknown arch", unknownArch, `unsupported architecture "mamba9"`},
		{"adapter as model", adapter, "LoRA adapter, not a model"},
		{"no tensors", noTensors, "no tensors"},
		{"heads", badHeads, "not divisible"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := LoadModel(c.path, ModelParams{})
			if err == nil {
				m.Close()
				t.Fatalf("loaded a bad file")
			}
			if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line containing %q", err, c.want)
			}
		})
	}
}

func TestModelMetadataAndTokens(t *testing.T) {
	m, err := LoadModel(stories(t), ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Arch() != "llama" || m.VocabSize() != 512 || m.Layers() != 5 || m.Embd() != 64 {
		t.Fatalf("arch %s vocab %d layers %d embd %d", m.Arch(), m.VocabSize(), m.Layers(), m.Embd())
	}
	if m.Params() != 292800 || m.TrainContext() != 2048 || m.BOS() != 1 || m.EOS() != 2 {
		t.Fatalf("params %d ctx %d bos %d eos %d", m.Params(), m.TrainContext(), m.BOS(), m.EOS())
	}
	if v, ok := m.Meta("general.architecture"); !ok || v != "llama" {
		t.Fatalf("meta %q %v", v, ok)
	}
	toks, err := m.Tokenize("Once upon a time", true, false)
	if err != nil {
		t.Fatal(err)
	}
	if toks[0] != m.BOS() || len(toks) < 4 {
		t.Fatalf("tokens %v", toks)
	}
	if got := m.Detokenize(toks, true, false); strings.TrimSpace(got) != "Once upon a time" {
		t.Fatalf("detokenized %q", got)
	}
	var pieces []byte
	for _, tk := range toks[1:] {
		pieces = append(pieces, m.Piece(tk, false)...)
	}
	if strings.TrimSpace(string(pieces)) != "Once upon a time" {
		t.Fatalf("pieces %q", pieces)
	}
}

func TestChatTemplate(t *testing.T) {
	m, err := LoadModel(stories(t), ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.ApplyChatTemplate("", []Message{{"user", "hi"}}, true); err == nil {
		t.Fatal("stories260K has no template; want an error")
	}
	tmpl, err := os.ReadFile(filepath.Join(sharedData(t), "chat-templates", "Qwen-Qwen2.5-7B-Instruct.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.ApplyChatTemplate(string(tmpl), []Message{{"system", "S"}, {"user", "请问你是谁"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n请问你是谁<|im_end|>\n<|im_start|>assistant\n"
	if got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func newStoriesContext(t *testing.T, p ContextParams) (*Model, *Context) {
	t.Helper()
	m, err := LoadModel(stories(t), ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	ctx, err := NewContext(m, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctx.Close)
	return m, ctx
}

func TestGenerateGreedyAndStops(t *testing.T) {
	m, ctx := newStoriesContext(t, ContextParams{NCtx: 256})
	prompt, _ := m.Tokenize("Once upon a time", true, false)
	var pieces []string
	res, err := ctx.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30}, func(s string) bool {
		pieces = append(pieces, s)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tokens != 30 || res.FinishReason != FinishLength || res.PromptTokens != len(prompt) {
		t.Fatalf("result %+v", res)
	}
	if strings.Join(pieces, "") != res.Text || !strings.Contains(res.Text, "Lily") {
		t.Fatalf("text %q", res.Text)
	}
	// greedy is deterministic, and the context can be reused
	res2, err := ctx.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30}, nil)
	if err != nil || res2.Text != res.Text {
		t.Fatalf("second run %q vs %q (%v)", res2.Text, res.Text, err)
	}
	// a stop string ends generation before it
	res3, err := ctx.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30, Stop: []string{"Lily"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res3.FinishReason != FinishStop || strings.Contains(res3.Text, "Lily") || !strings.HasPrefix(res.Text, res3.Text) {
		t.Fatalf("stop: %+v", res3)
	}
	// emit returning false stops at once
	n := 0
	res4, _ := ctx.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30}, func(string) bool { n++; return n < 3 })
	if n != 3 || res4.Tokens > 5 {
		t.Fatalf("emit false: n=%d tokens=%d", n, res4.Tokens)
	}
	// a cancelled context returns its error
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ctx.Generate(cctx, prompt, GenerateOptions{MaxTokens: 30}, nil); err != context.Canceled {
		t.Fatalf("cancelled: %v", err)
	}
	// a prompt that does not fit
	long := make([]Token, 300)
	if _, err := ctx.Generate(context.Background(), long, GenerateOptions{}, nil); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("long prompt: %v", err)
	}
	// the context fills up: finish reason length
	res5, err := ctx.Generate(context.Background(), prompt, GenerateOptions{}, nil)
	if err != nil || res5.FinishReason != FinishLength || res5.PromptTokens+res5.Tokens > ctx.NCtx() {
		t.Fatalf("full context: %+v %v", res5, err)
	}
}

func TestSampling(t *testing.T) {
	m, ctx := newStoriesContext(t, ContextParams{NCtx: 256})
	prompt, _ := m.Tokenize("Once upon a time", true, false)
	gen := func(p SamplerParams) string {
		res, err := ctx.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 40, Sampler: p}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Text
	}
	hot := SamplerParams{Temperature: 1.5, TopK: 40, TopP: 0.95, MinP: 0.01, Seed: 7}
	a, b := gen(hot), gen(hot)
	if a != b {
		t.Fatalf("same seed, different text:\n%q\n%q", a, b)
	}
	hot.Seed = 8
	if c := gen(hot); c == a {
		t.Fatalf("different seeds gave the same text %q", c)
	}
	greedy := gen(SamplerParams{})
	pen := gen(SamplerParams{RepeatPenalty: 1.5, FrequencyPenalty: 1, PresencePenalty: 1})
	if pen == greedy {
		t.Fatalf("penalties changed nothing: %q", pen)
	}
	for _, bad := range []SamplerParams{{Temperature: -1}, {TopP: 2}, {MinP: -0.1}, {TopK: -3}, {FrequencyPenalty: 3}, {Temperature: float32(math.NaN())}} {
		if _, err := NewSampler(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

func TestLogitsAndKV(t *testing.T) {
	m, ctx := newStoriesContext(t, ContextParams{NCtx: 128, NSeq: 2, KVF32: true})
	toks, _ := m.Tokenize("The cat sat", true, false)
	b := NewBatch(64)
	defer b.Free()
	for i, tk := range toks {
		b.Add(tk, i, 0, true)
		b.Add(tk, i, 1, i == len(toks)-1)
	}
	if err := ctx.Decode(b); err != nil {
		t.Fatal(err)
	}
	l0 := ctx.Logits(2 * (len(toks) - 1))
	l1 := ctx.Logits(2*(len(toks)-1) + 1)
	if len(l0) != m.VocabSize() {
		t.Fatalf("logits len %d", len(l0))
	}
	for i := range l0 {
		if math.IsNaN(float64(l0[i])) || math.Abs(float64(l0[i]-l1[i])) > 1e-4 {
			t.Fatalf("sequences 0 and 1 disagree at %d: %v vs %v", i, l0[i], l1[i])
		}
	}
	if ctx.SeqPosMax(0) != len(toks)-1 || ctx.SeqPosMax(1) != len(toks)-1 {
		t.Fatalf("pos max %d %d", ctx.SeqPosMax(0), ctx.SeqPosMax(1))
	}
	ctx.RemoveSeq(1, 1, -1)
	if ctx.SeqPosMax(1) != 0 {
		t.Fatalf("after trim: %d", ctx.SeqPosMax(1))
	}
	ctx.ClearKV()
	if ctx.SeqPosMax(0) != -1 {
		t.Fatal("clear left tokens")
	}
	b.Clear()
	if err := ctx.Decode(b); err == nil {
		t.Fatal("empty batch decoded")
	}
}

// A chat's next turn keeps what the previous Generate left in the sequence: the answer is
// the one a fresh prefill gives, and only the new tokens are decoded.
func TestGenerateKeepsCachedPrefix(t *testing.T) {
	m, ctx := newStoriesContext(t, ContextParams{NCtx: 256})
	first, _ := m.Tokenize("Once upon a time", true, false)
	res1, err := ctx.Generate(context.Background(), first, GenerateOptions{MaxTokens: 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res1.Sequence) != len(first)+res1.Tokens-1 || !slices.Equal(res1.Sequence[:len(first)], first) {
		t.Fatalf("sequence of %d tokens after a %d-token prompt and %d generated", len(res1.Sequence), len(first), res1.Tokens)
	}
	more, _ := m.Tokenize(" Then the dog said", false, false)
	next := append(slices.Clone(res1.Sequence), more...)
	got, err := ctx.Generate(context.Background(), next, GenerateOptions{MaxTokens: 20, Cached: len(res1.Sequence)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.CachedTokens != len(res1.Sequence) {
		t.Fatalf("kept %d tokens, want %d", got.CachedTokens, len(res1.Sequence))
	}
	want, err := ctx.Generate(context.Background(), next, GenerateOptions{MaxTokens: 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want.CachedTokens != 0 || got.Text != want.Text {
		t.Fatalf("with the cached prefix %q, from scratch %q", got.Text, want.Text)
	}
	// A Cached count as long as the prompt still decodes its last token.
	again, err := ctx.Generate(context.Background(), next, GenerateOptions{MaxTokens: 20, Cached: len(next) + 5}, nil)
	if err != nil || again.CachedTokens != len(next)-1 {
		t.Fatalf("cached %d of %d (%v)", again.CachedTokens, len(next), err)
	}
}

// A context's thread pool can be resized (within ggml's limit), and decodes called from
// different OS threads (as cgo calls land wherever the goroutine runs) give the same logits.
func TestThreadsAnyCountAnyCaller(t *testing.T) {
	m, ctx := newStoriesContext(t, ContextParams{NCtx: 64, Threads: 1, KVF32: true})
	toks, _ := m.Tokenize("Once upon a time", true, false)
	logits := func() []float32 {
		b := NewBatch(len(toks))
		defer b.Free()
		for i, tk := range toks {
			b.Add(tk, i, 0, i == len(toks)-1)
		}
		ctx.ClearKV()
		if err := ctx.Decode(b); err != nil {
			t.Error(err)
			return nil
		}
		return ctx.Logits(-1)
	}
	want := logits()
	if err := ctx.SetThreads(MaxThreads + 1); err == nil {
		t.Fatalf("%d threads accepted", MaxThreads+1)
	}
	if c, err := NewContext(m, ContextParams{NCtx: 64, Threads: MaxThreads + 1}); err == nil {
		c.Close()
		t.Fatalf("a context of %d threads was made", MaxThreads+1)
	}
	for _, n := range []int{3, 2, 0} {
		if err := ctx.SetThreads(n); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			var got []float32
			done := make(chan struct{})
			go func() { // a fresh goroutine, locked to a new OS thread by Decode
				defer close(done)
				runtime.LockOSThread()
				got = logits()
			}()
			<-done
			if len(got) != len(want) {
				t.Fatalf("threads %d: %d logits, want %d", n, len(got), len(want))
			}
			for i := range want {
				if math.Abs(float64(got[i]-want[i])) > 1e-5 {
					t.Fatalf("threads %d: logit %d is %v, with 1 thread %v", n, i, got[i], want[i])
				}
			}
		}
	}
}
