package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

var (
	modelOnce sync.Once
	qwen      *llama.Model
	modelErr  error
)

// tinyQwen is a random qwen2 model with the real Qwen2.5 vocabulary, shared by the tests.
func tinyQwen(t *testing.T) *llama.Model {
	t.Helper()
	modelOnce.Do(func() {
		llama.SetLogLevel(4)
		var p string
		if p, modelErr = testmodel.Ensure(testmodel.Tiny("qwen2")); modelErr == nil {
			qwen, modelErr = llama.LoadModel(p, llama.ModelParams{})
		}
	})
	if modelErr != nil {
		t.Fatal(modelErr)
	}
	return qwen
}

func newEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	if cfg.Model == nil {
		cfg.Model = tinyQwen(t)
	}
	if cfg.SlotCtx == 0 {
		cfg.SlotCtx = 256
	}
	if cfg.Threads == 0 {
		cfg.Threads = 2
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func tokenize(t *testing.T, m *llama.Model, s string) []llama.Token {
	t.Helper()
	toks, err := m.Tokenize(s, true, true)
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

// reference generates with the library's own single-sequence loop.
func reference(t *testing.T, m *llama.Model, prompt []llama.Token, n int) string {
	return referenceFA(t, m, prompt, n, false)
}

func referenceFA(t *testing.T, m *llama.Model, prompt []llama.Token, n int, flashAttn bool) string {
	t.Helper()
	lctx, err := llama.NewContext(m, llama.ContextParams{NCtx: 256, Threads: 2, FlashAttn: flashAttn})
	if err != nil {
		t.Fatal(err)
	}
	defer lctx.Close()
	res, err := lctx.Generate(context.Background(), prompt, llama.GenerateOptions{MaxTokens: n}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Text
}

func run(t *testing.T, e *Engine, req Request) (string, Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.Submit(ctx, req)
	if err != nil {
		return "", Result{}, err
	}
	return s.Wait(ctx)
}

func TestSingleMatchesLibrary(t *testing.T) {
	e := newEngine(t, Config{Parallel: 1})
	m := e.Model()
	prompt := tokenize(t, m, "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
	want := reference(t, m, prompt, 24)
	got, res, err := run(t, e, Request{Prompt: prompt, MaxTokens: 24})
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("engine answer differs from the library's:\n got %q\nwant %q", got, want)
	}
	if res.PromptTokens != len(prompt) || res.FinishReason == "" || res.Tokens == 0 || res.Tokens > 24 {
		t.Fatalf("bad result %+v", res)
	}
	if res.FinishReason == llama.FinishLength && res.Tokens != 24 {
		t.Fatalf("finish length after %d tokens", res.Tokens)
	}
}

// Batched decoding must give every request the answer it would get alone, with and without
// flash attention (conchd's default).
func TestConcurrentRequestsGetTheirOwnAnswer(t *testing.T) {
	for _, fa := range []bool{false, true} {
		t.Run(fmt.Sprint("flash_attn=", fa), func(t *testing.T) { testConcurrent(t, fa) })
	}
}

func testConcurrent(t *testing.T, fa bool) {
	e := newEngine(t, Config{Parallel: 4, BatchSize: 16, FlashAttn: fa})
	m := e.Model()
	prompts := []string{"Once upon a time", "你好，请介绍一下你自己", "The quick brown fox jumps", "1, 2, 3, 4, 5,", "春眠不觉晓", "Hello"}
	var wg sync.WaitGroup
	got := make([]string, len(prompts))
	errs := make([]error, len(prompts))
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _, errs[i] = run(t, e, Request{Prompt: tokenize(t, m, p), MaxTokens: 20 + i, IgnoreEOS: true})
		}()
	}
	wg.Wait()
	for i, p := range prompts {
		if errs[i] != nil {
			t.Fatalf("%q: %v", p, errs[i])
		}
		if !utf8.ValidString(got[i]) {
			t.Errorf("%q: invalid UTF-8 %q", p, got[i])
		}
		want := referenceFA(t, m, tokenize(t, m, p), 20+i, fa)
		if got[i] != want {
			t.Errorf("%q: batched answer differs from the single one:\n got %q\nwant %q", p, got[i], want)
		}
	}
}

func TestStopStringsAndLimits(t *testing.T) {
	e := newEngine(t, Config{Parallel: 2, SlotCtx: 64})
	m := e.Model()
	prompt := tokenize(t, m, "Once upon a time")
	full, _, err := run(t, e, Request{Prompt: prompt, MaxTokens: 30, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	// A stop string taken from the middle of the full answer cuts it right there.
	r := []rune(full)
	if len(r) < 6 {
		t.Fatalf("answer too short to test stops: %q", full)
	}
	stop := string(r[len(r)/2 : len(r)/2+2])
	cut, res, err := run(t, e, Request{Prompt: prompt, MaxTokens: 30, IgnoreEOS: true, Stop: []string{stop}})
	if err != nil {
		t.Fatal(err)
	}
	want := full[:strings.Index(full, stop)]
	if cut != want || res.FinishReason != llama.FinishStop {
		t.Fatalf("stop %q: got %q (%s), want %q", stop, cut, res.FinishReason, want)
	}
	// The context is full after 64 tokens: finish_reason length.
	_, res, err = run(t, e, Request{Prompt: prompt, MaxTokens: 1000, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.FinishReason != llama.FinishLength || res.PromptTokens+res.Tokens != 64 {
		t.Fatalf("full context: %+v", res)
	}
	// Prompts that do not fit are refused before queueing.
	long := make([]llama.Token, 64)
	for i := range long {
		long[i] = prompt[0]
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: long}); !errors.Is(err, ErrPromptTooLong) {
		t.Fatalf("long prompt: %v", err)
	}
	if _, err := e.Submit(context.Background(), Request{}); err == nil {
		t.Fatal("empty prompt accepted")
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: []llama.Token{-1}}); err == nil {
		t.Fatal("bad token accepted")
	}
}

// A cancelled request frees its slot for the next one at once.
func TestCancelFreesSlot(t *testing.T) {
	e := newEngine(t, Config{Parallel: 1, SlotCtx: 512})
	m := e.Model()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := e.Submit(ctx, Request{Prompt: tokenize(t, m, "Once upon a time"), IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if text, done := s.Next(ctx); text == "" || done {
		t.Fatalf("no first piece (%q, %v)", text, done)
	}
	if e.BusySlots() != 1 {
		t.Fatalf("busy slots %d", e.BusySlots())
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for e.BusySlots() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("slot still busy after cancel")
		}
		time.Sleep(time.Millisecond)
	}
	_, err = s.Result()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("result error %v", err)
	}
	if _, _, err := run(t, e, Request{Prompt: tokenize(t, m, "Hello"), MaxTokens: 4}); err != nil {
		t.Fatal(err)
	}
}

func TestQueueFull(t *testing.T) {
	e := newEngine(t, Config{Parallel: 1, Queue: 2, SlotCtx: 512})
	m := e.Model()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var streams []*Stream
	var full int
	for range 6 {
		s, err := e.Submit(ctx, Request{Prompt: tokenize(t, m, "Hi"), IgnoreEOS: true})
		if errors.Is(err, ErrQueueFull) {
			full++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	// one running + two waiting
	if len(streams) != 3 || full != 3 {
		t.Fatalf("accepted %d, refused %d; want 3 and 3", len(streams), full)
	}
	// The engine admits the first job on its own goroutine: wait for that.
	for deadline := time.Now().Add(5 * time.Second); e.BusySlots() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if d := e.QueueDepth(); d != 2 {
		t.Fatalf("queue depth %d, want 2", d)
	}
	cancel()
	for _, s := range streams {
		if _, _, err := s.Wait(context.Background()); !errors.Is(err, context.Canceled) {
			t.Fatalf("want cancelled, got %v", err)
		}
	}
	if e.QueueDepth() != 0 {
		t.Fatalf("queue not emptied")
	}
}

// The next turn of a chat reuses the slot's cached prefix.
func TestPrefixReuse(t *testing.T) {
	e := newEngine(t, Config{Parallel: 2})
	m := e.Model()
	first := tokenize(t, m, "<|im_start|>user\n讲个故事<|im_end|>\n<|im_start|>assistant\n")
	text, res, err := run(t, e, Request{Prompt: first, MaxTokens: 8})
	if err != nil || res.CachedTokens != 0 {
		t.Fatalf("first turn: %v %+v", err, res)
	}
	second := tokenize(t, m, "<|im_start|>user\n讲个故事<|im_end|>\n<|im_start|>assistant\n"+text+"<|im_end|>\n<|im_start|>user\n再来一个<|im_end|>\n<|im_start|>assistant\n")
	got, res, err := run(t, e, Request{Prompt: second, MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	if res.CachedTokens < len(first) {
		t.Fatalf("cached %d tokens, want at least %d", res.CachedTokens, len(first))
	}
	if want := reference(t, m, second, 8); got != want {
		t.Fatalf("answer with a reused prefix differs:\n got %q\nwant %q", got, want)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	e := newEngine(t, Config{Parallel: 1, Queue: 4, SlotCtx: 512})
	m := e.Model()
	var streams []*Stream
	for i := range 3 {
		s, err := e.Submit(context.Background(), Request{Prompt: tokenize(t, m, fmt.Sprint("Hi ", i)), IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	e.Close()
	for _, s := range streams {
		if _, _, err := s.Wait(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("want ErrClosed, got %v", err)
		}
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: tokenize(t, m, "x")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
}

// Drain lets running requests finish and refuses new ones; Close after it still works.
func TestDrainThenClose(t *testing.T) {
	e := newEngine(t, Config{Parallel: 1})
	m := e.Model()
	s, err := e.Submit(context.Background(), Request{Prompt: tokenize(t, m, "Hi"), MaxTokens: 20, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, res, err := s.Wait(ctx); err != nil || res.Tokens != 20 {
		t.Fatalf("drained request: %+v %v", res, err)
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: tokenize(t, m, "x")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit while draining: %v", err)
	}
	done := make(chan struct{})
	go func() { e.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close after Drain hangs")
	}
}

// A prompt prefix held by another slot, even a running one, is shared rather than
// computed again, and the answer is unchanged.
func TestPrefixSharedAcrossSlots(t *testing.T) {
	e := newEngine(t, Config{Parallel: 2, SlotCtx: 512})
	m := e.Model()
	system := "<|im_start|>system\n你是一个乐于助人的助手。You are a helpful assistant.<|im_end|>\n"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := e.Submit(ctx, Request{Prompt: tokenize(t, m, system+"<|im_start|>user\n讲个故事<|im_end|>\n<|im_start|>assistant\n"), IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if text, _ := a.Next(ctx); text == "" {
		t.Fatal("no output from the running request")
	}
	b := tokenize(t, m, system+"<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
	shared := llama.CommonPrefix(tokenize(t, m, system+"<|im_start|>user\n讲个故事"), b)
	got, res, err := run(t, e, Request{Prompt: b, MaxTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	if res.CachedTokens != shared {
		t.Fatalf("cached %d tokens, want the %d shared with the running request", res.CachedTokens, shared)
	}
	if want := reference(t, m, b, 12); got != want {
		t.Fatalf("answer with a shared prefix differs:\n got %q\nwant %q", got, want)
	}
	cancel()
}

// While one request generates, a long prompt is read a chunk per step, so the generating
// request keeps getting tokens; alone, a prompt is read a whole batch at a time. Chunked
// or not, the answer is the library's.
func TestLongPromptIsChunkedWhileOthersGenerate(t *testing.T) {
	var watching atomic.Bool
	var biggest atomic.Int64
	e := newEngine(t, Config{Parallel: 2, SlotCtx: 512, BatchSize: 256, PrefillChunk: 16,
		OnStep: func(tokens int, _ time.Duration) {
			if watching.Load() && int64(tokens) > biggest.Load() {
				biggest.Store(int64(tokens))
			}
		}})
	m := e.Model()
	long := tokenize(t, m, strings.Repeat("The magic conch shell answers every question. ", 20))
	if len(long) < 150 {
		t.Fatalf("long prompt has only %d tokens", len(long))
	}

	watching.Store(true)
	if _, _, err := run(t, e, Request{Prompt: long, MaxTokens: 2}); err != nil {
		t.Fatal(err)
	}
	if got := biggest.Load(); got < int64(len(long)) {
		t.Fatalf("alone, the %d-token prompt was read in steps of at most %d tokens", len(long), got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := e.Submit(ctx, Request{Prompt: tokenize(t, m, "Once upon a time"), IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if text, _ := a.Next(ctx); text == "" {
		t.Fatal("no output from the running request")
	}
	biggest.Store(0)
	other := append(tokenize(t, m, "Tell me: "), long[1:]...)
	got, _, err := run(t, e, Request{Prompt: other, MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	if b := biggest.Load(); b > 16+1 {
		t.Fatalf("a step read %d tokens while another request was generating (chunk 16 + 1)", b)
	}
	if want := reference(t, m, other, 8); got != want {
		t.Fatalf("answer of a chunked prompt differs:\n got %q\nwant %q", got, want)
	}
	cancel()
}

// Log probabilities come for every generated token: the greedy choice is the most likely,
// the alternatives are sorted, and they are probabilities.
func TestLogprobs(t *testing.T) {
	e := newEngine(t, Config{Parallel: 2, SlotCtx: 256})
	m := e.Model()
	st, err := e.Submit(context.Background(), Request{Prompt: tokenize(t, m, "Once upon a time"), MaxTokens: 6, IgnoreEOS: true, Logprobs: true, TopLogprobs: 3})
	if err != nil {
		t.Fatal(err)
	}
	text, res, err := st.Wait(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	lps := st.TakeLogprobs()
	if len(lps) != res.Tokens || res.Tokens != 6 {
		t.Fatalf("%d entries for %d tokens (%q)", len(lps), res.Tokens, text)
	}
	var pieces strings.Builder
	for i, lp := range lps {
		pieces.Write(m.Piece(lp.Token, false))
		var mass float64
		for k, alt := range lp.Top {
			mass += math.Exp(float64(alt.Logprob))
			if k > 0 && alt.Logprob > lp.Top[k-1].Logprob {
				t.Fatalf("token %d: alternatives not sorted: %+v", i, lp.Top)
			}
		}
		if len(lp.Top) != 3 || lp.Top[0].Token != lp.Token || lp.Top[0].Logprob != lp.Logprob || lp.Logprob > 0 || mass > 1+1e-5 {
			t.Fatalf("token %d: %+v (probability mass %v)", i, lp, mass)
		}
	}
	if pieces.String() != text {
		t.Fatalf("the entries' tokens spell %q, the text is %q", pieces.String(), text)
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: tokenize(t, m, "x"), TopLogprobs: 2}); err == nil {
		t.Fatal("top logprobs without logprobs accepted")
	}
}

// A scored prompt gets one entry per token after the first, each the token's log
// probability given the tokens before it as a plain full-logits decode computes it, also
// when the prompt spans several steps, shares them with another request, and when an
// earlier request left it in the cache.
func TestPromptLogprobs(t *testing.T) {
	e := newEngine(t, Config{Parallel: 2, SlotCtx: 256})
	m := e.Model()
	prompt := tokenize(t, m, strings.Repeat("The magic conch shell says no. ", 8))
	if len(prompt) <= scoredChunk {
		t.Fatalf("prompt of %d tokens fits one chunk", len(prompt))
	}

	lctx, err := llama.NewContext(m, llama.ContextParams{NCtx: 256, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer lctx.Close()
	b := llama.NewBatch(len(prompt))
	defer b.Free()
	for i, tk := range prompt {
		b.Add(tk, i, 0, true)
	}
	if err := lctx.Decode(b); err != nil {
		t.Fatal(err)
	}
	want := make([]float64, len(prompt)-1)
	for i := range want {
		l := lctx.Logits(i)
		mx := math.Inf(-1)
		for _, v := range l {
			mx = math.Max(mx, float64(v))
		}
		var sum float64
		for _, v := range l {
			sum += math.Exp(float64(v) - mx)
		}
		want[i] = float64(l[prompt[i+1]]) - mx - math.Log(sum)
	}

	// Another request generates meanwhile, so the scored prompt's rows sit behind its token
	// in each batch.
	busy, err := e.Submit(context.Background(), Request{Prompt: tokenize(t, m, "Hi"), MaxTokens: 200, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, done := busy.Next(context.Background()); done {
		t.Fatal("the other request ended at once")
	}
	for round := range 2 { // the second finds the prompt cached and must read it again
		st, err := e.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 2, IgnoreEOS: true, Logprobs: true, PromptLogprobs: true, TopLogprobs: 1})
		if err != nil {
			t.Fatal(err)
		}
		_, res, err := st.Wait(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		lps := st.TakeLogprobs()
		if len(lps) != len(want)+2 || res.CachedTokens != 0 {
			t.Fatalf("round %d: %d entries for %d prompt and 2 generated tokens, %d cached", round, len(lps), len(prompt), res.CachedTokens)
		}
		for i, lp := range lps {
			if i >= len(want) {
				if lp.Prompt {
					t.Fatalf("round %d: generated entry %d marked as prompt", round, i)
				}
				continue
			}
			if !lp.Prompt || lp.Token != prompt[i+1] || len(lp.Top) != 1 || math.Abs(float64(lp.Logprob)-want[i]) > 1e-3 {
				t.Fatalf("round %d: prompt entry %d: %+v, want token %d logprob %.4f", round, i, lp, prompt[i+1], want[i])
			}
		}
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: prompt, PromptLogprobs: true}); err == nil {
		t.Fatal("prompt logprobs without logprobs accepted")
	}
	if _, res, err := busy.Wait(context.Background()); err != nil || res.Tokens != 200 {
		t.Fatalf("the other request: %d tokens, %v", res.Tokens, err)
	}
}
