// Package engine schedules text generation for many callers on one llama.cpp context.
//
// One goroutine owns the context. Requests wait in a bounded queue and run in parallel
// slots (one llama.cpp sequence each) with continuous batching: every step decodes one
// token for each generating slot, and fills the rest of the batch with prompt chunks of
// slots that are still reading their prompt. Output goes to each caller through a Stream
// that never blocks the engine, so one slow client cannot slow the others.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/magicconch/conch/llama"
)

// Adapter is a LoRA adapter callers can select by name.
type Adapter struct {
	Name    string
	Adapter *llama.Adapter
	Scale   float32
}

// Config says how to build an Engine.
type Config struct {
	Model     *llama.Model
	Adapters  []Adapter
	Parallel  int // slots (sequences decoded together); default 1
	SlotCtx   int // tokens one request may use, prompt and answer together; default 4096
	BatchSize int // most tokens per decode step; default 512
	// PrefillChunk is the most prompt tokens one step reads while other requests are
	// generating, so that a long prompt delays their next token by one short step rather
	// than by a whole batch; default 128. Alone, a prompt is read BatchSize at a time.
	PrefillChunk int
	Threads      int // 0: physical cores
	Queue        int // requests that may wait for a slot; default 64 (negative: none may wait)
	FlashAttn    bool
	Logger       *slog.Logger

	// Observers, called on the engine goroutine (keep them cheap): the time from Submit to
	// the first generated token, and the time between two tokens of one request.
	OnFirstToken func(time.Duration)
	OnToken      func(time.Duration)
	// OnStep learns each decode step's size in tokens and its duration.
	OnStep func(tokens int, d time.Duration)
}

// Errors Submit returns.
var (
	ErrQueueFull     = errors.New("server busy: the request queue is full")
	ErrClosed        = errors.New("the engine is shutting down")
	ErrUnknownModel  = errors.New("unknown adapter")
	ErrPromptTooLong = errors.New("prompt too long")
)

// Engine runs generation requests on one model. Its methods are safe for concurrent use.
type Engine struct {
	cfg     Config
	model   *llama.Model
	lctx    *llama.Context
	batch   *llama.Batch
	log     *slog.Logger
	adapter map[string]Adapter

	mu        sync.Mutex
	queue     []*job // waiting for a slot, oldest first
	closed    bool   // no new requests (draining or closed)
	closeOnce sync.Once
	wake      chan struct{} // cap 1: something changed for the engine goroutine
	quit      chan struct{}
	done      chan struct{}

	busy atomic.Int32 // slots in use (read by metrics)

	// engine goroutine only
	slots      []*slot
	curAdapter string // adapter set on the context ("" none)
	lastGroup  string // adapter group of the previous step, for round robin
}

// New creates the context and starts the engine goroutine.
func New(cfg Config) (*Engine, error) {
	if cfg.Model == nil {
		return nil, errors.New("engine: no model")
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 1
	}
	if cfg.SlotCtx <= 0 {
		cfg.SlotCtx = 4096
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 512
	}
	if cfg.PrefillChunk <= 0 {
		cfg.PrefillChunk = 128
	}
	if cfg.Queue == 0 {
		cfg.Queue = 64
	}
	if cfg.Queue < 0 {
		cfg.Queue = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BatchSize < cfg.Parallel {
		return nil, fmt.Errorf("engine: batch size %d is smaller than the %d parallel slots", cfg.BatchSize, cfg.Parallel)
	}
	if tc := cfg.Model.TrainContext(); tc > 0 && cfg.SlotCtx > tc {
		cfg.Logger.Warn("context size is larger than the model was trained for", "ctx", cfg.SlotCtx, "trained", tc)
	}
	adapters := map[string]Adapter{}
	for _, a := range cfg.Adapters {
		if a.Name == "" || a.Adapter == nil {
			return nil, errors.New("engine: adapter without a name or without a loaded adapter")
		}
		if _, dup := adapters[a.Name]; dup {
			return nil, fmt.Errorf("engine: two adapters named %q", a.Name)
		}
		adapters[a.Name] = a
	}
	// Every slot may fill its whole window, so the shared KV cache holds all of them.
	lctx, err := llama.NewContext(cfg.Model, llama.ContextParams{
		NCtx: cfg.SlotCtx * cfg.Parallel, NBatch: cfg.BatchSize, NSeq: cfg.Parallel,
		Threads: cfg.Threads, FlashAttn: cfg.FlashAttn,
	})
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg: cfg, model: cfg.Model, lctx: lctx, batch: llama.NewBatch(cfg.BatchSize), log: cfg.Logger,
		adapter: adapters, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
	for i := range cfg.Parallel {
		e.slots = append(e.slots, &slot{id: i})
	}
	if err := e.warmup(); err != nil {
		e.batch.Free()
		lctx.Close()
		return nil, err
	}
	go e.run()
	return e, nil
}

// warmup runs one decode so that the first request does not pay for the backend's
// first-use costs (buffer allocation, page faults on the weights).
func (e *Engine) warmup() error {
	t := e.model.BOS()
	if t < 0 {
		t = 0
	}
	e.batch.Clear()
	e.batch.Add(t, 0, 0, true)
	err := e.lctx.Decode(e.batch)
	e.lctx.ClearKV()
	if err != nil {
		return fmt.Errorf("engine: warm-up decode: %w", err)
	}
	return nil
}

// Model is the model the engine runs.
func (e *Engine) Model() *llama.Model { return e.model }

// SlotCtx is the most tokens one request may use (prompt and answer).
func (e *Engine) SlotCtx() int { return e.cfg.SlotCtx }

// Parallel is the number of slots.
func (e *Engine) Parallel() int { return e.cfg.Parallel }

// Adapters lists the adapter names, sorted.
func (e *Engine) Adapters() []string {
	var names []string
	for n := range e.adapter {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// HasAdapter reports whether name is a loaded adapter.
func (e *Engine) HasAdapter(name string) bool { _, ok := e.adapter[name]; return ok }

// QueueDepth is the number of requests waiting for a slot.
func (e *Engine) QueueDepth() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queue)
}

// BusySlots is the number of slots running a request.
func (e *Engine) BusySlots() int { return int(e.busy.Load()) }

// Request is one generation.
type Request struct {
	Prompt    []llama.Token // already tokenized, special tokens included
	MaxTokens int           // most tokens to generate; <= 0: until the slot's context is full
	Stop      []string      // generation ends before the first of these
	// StopTokens end generation like end-of-generation tokens do (a chat template's
	// end-of-turn token when the model's EOS is another).
	StopTokens []llama.Token
	Sampler    llama.SamplerParams
	Adapter    string // "" for the base model
	IgnoreEOS  bool   // keep going past end-of-generation tokens (benchmarks)
	// Logprobs asks for each generated token's log probability (Stream.TakeLogprobs),
	// with the TopLogprobs most likely tokens at that position.
	Logprobs    bool
	TopLogprobs int
	// PromptLogprobs (with Logprobs) also scores the prompt: an entry for each prompt
	// token after the first, marked Prompt, comes before the generated tokens' entries.
	// The prompt is then read in full, without the cached prefix.
	PromptLogprobs bool
	// ScoreOnly ends the request once the prompt is read, generating nothing (finish
	// reason "length"): with PromptLogprobs, a prompt's score alone.
	ScoreOnly bool
}

// MaxTopLogprobs bounds Request.TopLogprobs (OpenAI's limit).
const MaxTopLogprobs = 20

// TokenLogprob is a generated token's log probability under the model (before the
// sampler's temperature and cut-offs), with the most likely tokens when asked.
type TokenLogprob struct {
	Token   llama.Token
	Logprob float32
	Top     []TokenProb // most likely first
	Prompt  bool        // a prompt token (Request.PromptLogprobs), not a generated one
}

// TokenProb is one token and its log probability.
type TokenProb struct {
	Token   llama.Token
	Logprob float32
}

// Result summarises a finished generation.
type Result struct {
	PromptTokens int
	CachedTokens int // prompt tokens reused from the slot's previous request
	Tokens       int // generated
	FinishReason string
	QueueTime    time.Duration // waiting for a slot
	FirstToken   time.Duration // from Submit to the first generated token
	Total        time.Duration // from Submit to the end
}

// Submit queues a request. The returned Stream delivers the text; cancelling ctx ends
// the request and frees its slot at the next step. Submit fails at once when the queue
// is full or the request is invalid.
func (e *Engine) Submit(ctx context.Context, req Request) (*Stream, error) {
	if len(req.Prompt) == 0 {
		return nil, errors.New("empty prompt")
	}
	if len(req.Prompt) >= e.cfg.SlotCtx {
		return nil, fmt.Errorf("%w: %d tokens, the context holds %d", ErrPromptTooLong, len(req.Prompt), e.cfg.SlotCtx)
	}
	nv := e.model.VocabSize()
	for _, t := range req.Prompt {
		if t < 0 || int(t) >= nv {
			return nil, fmt.Errorf("prompt token %d is not in the vocabulary", t)
		}
	}
	if req.Adapter != "" && !e.HasAdapter(req.Adapter) {
		return nil, fmt.Errorf("%w %q", ErrUnknownModel, req.Adapter)
	}
	if err := req.Sampler.Validate(); err != nil {
		return nil, err
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > MaxTopLogprobs || (req.TopLogprobs > 0 || req.PromptLogprobs) && !req.Logprobs {
		return nil, fmt.Errorf("top logprobs %d: 0..%d, and (like prompt logprobs) only with logprobs", req.TopLogprobs, MaxTopLogprobs)
	}
	j := &job{req: req, ctx: ctx, out: newStream(), submitted: time.Now()}
	// Wake the engine when the caller gives up, so a waiting job leaves the queue and a
	// running one frees its slot without waiting for the next token.
	stop := context.AfterFunc(ctx, e.poke)
	j.out.onEnd = func() { stop() }
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		stop()
		return nil, ErrClosed
	case len(e.queue)-(e.cfg.Parallel-int(e.busy.Load())) >= e.cfg.Queue:
		e.mu.Unlock()
		stop()
		return nil, ErrQueueFull
	}
	e.queue = append(e.queue, j)
	e.mu.Unlock()
	e.poke()
	return j.out, nil
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Close stops accepting requests, ends the running and waiting ones with ErrClosed, and
// frees the context. Drain first (with Shutdown) to let requests finish.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.closeOnce.Do(func() {
		close(e.quit)
		<-e.done
		e.batch.Free()
		e.lctx.Close()
	})
}

// Drain stops accepting new requests and waits until every accepted one has finished or
// ctx ends.
func (e *Engine) Drain(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	for {
		e.mu.Lock()
		n := len(e.queue)
		e.mu.Unlock()
		if n == 0 && e.busy.Load() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
