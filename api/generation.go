package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"math"
	mrand "math/rand/v2"

	"github.com/gin-gonic/gin"

	"github.com/magicconch/conch/internal/chat"
	"github.com/magicconch/conch/internal/engine"
	"github.com/magicconch/conch/llama"
)

// options are the generation settings every endpoint shares, as the caller gave them
// (nil: not given).
type options struct {
	MaxTokens        *int
	Temperature      *float64
	TopP             *float64
	TopK             *int
	MinP             *float64
	Seed             *int64
	PresencePenalty  *float64
	FrequencyPenalty *float64
	RepeatPenalty    *float64
	Stop             []string
	IgnoreEOS        bool
	Logprobs         bool
	TopLogprobs      *int
	PromptLogprobs   bool // score the prompt too (completions' echo with logprobs)
	ScoreOnly        bool // read the prompt, generate nothing (completions' echo with max_tokens 0)
}

// Defaults when a request leaves a setting out (OpenAI's for temperature and top_p).
const (
	defaultTemperature = 1.0
	maxStops           = 16
	maxStopLen         = 256
)

// resolveModel maps a requested model id to an adapter name ("" for the base model).
func (s *Server) resolveModel(e *engine.Engine, name string) (string, *apiError) {
	if name == "" || name == s.cfg.ModelName {
		return "", nil
	}
	if e.HasAdapter(name) {
		return name, nil
	}
	return "", errModelNotFound(name)
}

// generationRequest is a JSON request body that asks for a generation.
type generationRequest interface {
	options() (options, *apiError)
	modelName() string
}

// begin is how every JSON generation handler starts: the engine, the body decoded, its
// options and the adapter its model names. On failure it has answered and ok is false.
func (s *Server) begin(c *gin.Context, body generationRequest) (e *engine.Engine, o options, adapter string, ok bool) {
	if e = s.ready(c); e == nil {
		return nil, o, "", false
	}
	aerr := decodeJSON(c, body)
	if aerr == nil {
		o, aerr = body.options()
	}
	if aerr == nil {
		adapter, aerr = s.resolveModel(e, body.modelName())
	}
	if aerr != nil {
		abort(c, aerr)
		return nil, o, "", false
	}
	return e, o, adapter, true
}

// build validates o and fills in the engine request for prompt tokens toks, for slots of
// n tokens.
func (s *Server) build(n int, o options, toks []llama.Token, promptParam string) (engine.Request, *apiError) {
	var r engine.Request
	switch {
	case len(toks) == 0:
		return r, badRequest(promptParam, "the prompt is empty")
	case len(toks) >= n:
		return r, badRequest(promptParam, "the prompt is %d tokens, more than the context of %d allows", len(toks), n)
	}
	if o.MaxTokens != nil {
		switch m := *o.MaxTokens; {
		case m <= 0:
			return r, badRequest("max_tokens", "must be at least 1, got %d", m)
		case m > n:
			return r, badRequest("max_tokens", "%d is larger than the context of %d tokens", m, n)
		}
		r.MaxTokens = *o.MaxTokens
	} else if s.cfg.DefaultMaxTokens > 0 {
		r.MaxTokens = s.cfg.DefaultMaxTokens
	}
	sp := llama.SamplerParams{Temperature: defaultTemperature}
	if o.Temperature != nil {
		if bad(*o.Temperature, 0, 2) {
			return r, badRequest("temperature", "must be between 0 and 2, got %v", *o.Temperature)
		}
		sp.Temperature = float32(*o.Temperature)
	}
	if o.TopP != nil {
		if bad(*o.TopP, 0, 1) {
			return r, badRequest("top_p", "must be between 0 and 1, got %v", *o.TopP)
		}
		sp.TopP = float32(*o.TopP)
	}
	if o.TopK != nil {
		if *o.TopK < 0 {
			return r, badRequest("top_k", "must not be negative, got %d", *o.TopK)
		}
		sp.TopK = min(*o.TopK, 1<<20) // more than any vocabulary: the same as off, and fits llama.cpp's int32
	}
	if o.MinP != nil {
		if bad(*o.MinP, 0, 1) {
			return r, badRequest("min_p", "must be between 0 and 1, got %v", *o.MinP)
		}
		sp.MinP = float32(*o.MinP)
	}
	if o.PresencePenalty != nil {
		if bad(*o.PresencePenalty, -2, 2) {
			return r, badRequest("presence_penalty", "must be between -2 and 2, got %v", *o.PresencePenalty)
		}
		sp.PresencePenalty = float32(*o.PresencePenalty)
	}
	if o.FrequencyPenalty != nil {
		if bad(*o.FrequencyPenalty, -2, 2) {
			return r, badRequest("frequency_penalty", "must be between -2 and 2, got %v", *o.FrequencyPenalty)
		}
		sp.FrequencyPenalty = float32(*o.FrequencyPenalty)
	}
	if o.RepeatPenalty != nil {
		if bad(*o.RepeatPenalty, 0, 10) {
			return r, badRequest("repeat_penalty", "must be between 0 and 10, got %v", *o.RepeatPenalty)
		}
		sp.RepeatPenalty = float32(*o.RepeatPenalty)
	}
	if o.Seed != nil {
		sp.Seed = uint32(*o.Seed)
	} else {
		sp.Seed = mrand.Uint32()
	}
	if len(o.Stop) > maxStops {
		return r, badRequest("stop", "at most %d stop strings, got %d", maxStops, len(o.Stop))
	}
	for _, st := range o.Stop {
		if len(st) > maxStopLen {
			return r, badRequest("stop", "a stop string is longer than %d bytes", maxStopLen)
		}
	}
	r.Prompt, r.Sampler, r.Stop, r.IgnoreEOS = toks, sp, o.Stop, o.IgnoreEOS
	r.Logprobs, r.PromptLogprobs, r.ScoreOnly = o.Logprobs, o.PromptLogprobs, o.ScoreOnly
	if o.TopLogprobs != nil {
		if k := *o.TopLogprobs; k < 0 || k > engine.MaxTopLogprobs || !o.Logprobs {
			return r, badRequest("top_logprobs", "must be between 0 and %d, with logprobs true; got %d", engine.MaxTopLogprobs, k)
		}
		r.TopLogprobs = *o.TopLogprobs
	}
	return r, nil
}

func bad(v, lo, hi float64) bool { return math.IsNaN(v) || v < lo || v > hi }

// running is a request the engine has taken. Its handler must call cancel when done.
type running struct {
	model  string // public id, echoed in responses
	ctx    context.Context
	cancel context.CancelFunc
	st     *engine.Stream
}

// start builds the engine request for a rendered prompt and submits it. On failure it
// has answered the client and returns nil.
func (s *Server) start(c *gin.Context, e *engine.Engine, o options, p chat.Prompt, adapter, promptParam string) *running {
	req, aerr := s.build(e.SlotCtx(), o, p.Tokens, promptParam)
	if aerr != nil {
		abort(c, aerr)
		return nil
	}
	req.Stop = append(req.Stop, p.Stops...)
	req.StopTokens = p.StopTokens
	req.Adapter = adapter
	ctx, cancel := context.WithCancel(c.Request.Context())
	st, err := e.Submit(ctx, req)
	if err != nil {
		cancel()
		abort(c, submitError(c, err, promptParam))
		return nil
	}
	return &running{model: s.modelID(adapter), ctx: ctx, cancel: cancel, st: st}
}

// account records a finished request's tokens in the metrics.
func (s *Server) account(model string, res engine.Result) {
	s.metrics.promptTokens.WithLabelValues(model).Add(float64(res.PromptTokens))
	s.metrics.genTokens.WithLabelValues(model).Add(float64(res.Tokens))
	finish := res.FinishReason
	if finish == "" {
		finish = "cancelled"
	}
	s.log.Info("generation", "model", model, "prompt_tokens", res.PromptTokens, "cached_tokens", res.CachedTokens,
		"tokens", res.Tokens, "finish", finish, "queue_ms", res.QueueTime.Milliseconds(),
		"first_token_ms", res.FirstToken.Milliseconds(), "ms", res.Total.Milliseconds())
}

// wait returns a non-streamed answer and counts it. When generation fails it settles
// the metrics, answers the client (unless it has gone) and reports false.
func (s *Server) wait(c *gin.Context, ctx context.Context, cancel context.CancelFunc, model string, st *engine.Stream) (string, engine.Result, bool) {
	out, res, err := st.Wait(ctx)
	if err != nil {
		cancel()
		s.settle(model, st)
		if c.Request.Context().Err() == nil {
			abort(c, runError(err))
		}
		return "", res, false
	}
	s.account(model, res)
	return out, res, true
}

// settle waits for the engine to end st (it does promptly once the request's context is
// cancelled) and counts its tokens; for requests whose client went away.
func (s *Server) settle(model string, st *engine.Stream) {
	_, res, _ := st.Wait(context.Background())
	s.account(model, res)
}

// relay streams r's text to emit until the end and counts the finished request. When
// that fails it ends the request: report tells a client still there what went wrong (each
// API in its own shape), and the tokens are counted once the engine lets go. ok says
// whether the answer is complete.
func (s *Server) relay(c *gin.Context, r *running, emit func(string) error, report func(*apiError)) (engine.Result, bool) {
	res, err := pump(r.ctx, r.st, emit)
	if err != nil {
		r.cancel()
		if c.Request.Context().Err() == nil {
			report(runError(err))
		}
		s.settle(r.model, r.st)
		return res, false
	}
	s.account(r.model, res)
	return res, true
}

// pump feeds the stream's text to emit until the end; it returns the result, or the
// request context's error when the client went away.
func pump(ctx context.Context, st *engine.Stream, emit func(string) error) (engine.Result, error) {
	for {
		text, done := st.Next(ctx)
		if text != "" {
			if err := emit(text); err != nil {
				return engine.Result{}, err
			}
		}
		if done {
			return st.Result()
		}
		if ctx.Err() != nil {
			return engine.Result{}, ctx.Err()
		}
	}
}

func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
