package api

import (
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/magicconch/conch/internal/chat"
	"github.com/magicconch/conch/llama"
)

// generateResponse is the original service's answer, with usage added.
type generateResponse struct {
	GenerateText string `json:"generate_text"`
	FinishReason string `json:"finish_reason"`
	Usage        usage  `json:"usage"`
}

// generatePiece is one streamed event of /generate?stream=true.
type generatePiece struct {
	Text string `json:"text"`
}

// generateDone is the last streamed event (event: done).
type generateDone struct {
	FinishReason string `json:"finish_reason"`
	Usage        usage  `json:"usage"`
}

// generate is GET /generate?prompt=...: the contract of the original FastAPI service
// ({"generate_text": ...}), plus sampling parameters and streaming.
func (s *Server) generate(c *gin.Context) {
	e := s.ready(c)
	if e == nil {
		return
	}
	q := queryParser{c: c}
	text := c.Query("prompt")
	o := options{
		MaxTokens:        q.int("max_tokens"),
		Temperature:      q.float("temperature"),
		TopP:             q.float("top_p"),
		TopK:             q.int("top_k"),
		MinP:             q.float("min_p"),
		Seed:             q.int64("seed"),
		PresencePenalty:  q.float("presence_penalty"),
		FrequencyPenalty: q.float("frequency_penalty"),
		RepeatPenalty:    q.float("repeat_penalty"),
		Stop:             c.QueryArray("stop"),
	}
	raw := q.boolean("raw")
	echo := q.boolean("echo")
	stream := q.boolean("stream")
	o.IgnoreEOS = q.boolean("ignore_eos")
	if q.err != nil {
		abort(c, q.err)
		return
	}
	if _, ok := c.GetQuery("prompt"); !ok {
		abort(c, badRequest("prompt", "missing: GET /generate?prompt=your+text"))
		return
	}
	if text == "" {
		abort(c, badRequest("prompt", "the prompt is empty"))
		return
	}
	adapter, aerr := s.resolveModel(e, c.Query("model"))
	if aerr != nil {
		abort(c, aerr)
		return
	}
	var p chat.Prompt
	var err error
	if raw {
		p.Tokens, err = chat.Tokenize(e.Model(), text)
	} else {
		p, err = s.renderer(e).Render([]llama.Message{{Role: "user", Content: text}})
	}
	if err != nil {
		abort(c, badRequest("prompt", "%v", err))
		return
	}
	r := s.start(c, e, o, p, adapter, "prompt")
	if r == nil {
		return
	}
	defer r.cancel()
	ctx, cancel, model, st := r.ctx, r.cancel, r.model, r.st
	prefix := ""
	if echo {
		prefix = text
	}
	if !stream {
		out, res, ok := s.wait(c, ctx, cancel, model, st)
		if !ok {
			return
		}
		c.JSON(http.StatusOK, generateResponse{GenerateText: prefix + out, FinishReason: res.FinishReason, Usage: usageOf(res)})
		return
	}
	w := newSSE(c)
	if prefix != "" {
		if w.send("", generatePiece{Text: prefix}) != nil {
			cancel()
			s.settle(model, st)
			return
		}
	}
	res, ok := s.relay(c, r, func(t string) error { return w.send("", generatePiece{Text: t}) },
		func(e *apiError) { w.send("error", errorBody{e}) })
	if !ok {
		return
	}
	w.send("done", generateDone{FinishReason: res.FinishReason, Usage: usageOf(res)})
}

// queryParser reads typed query parameters, keeping the first error.
type queryParser struct {
	c   *gin.Context
	err *apiError
}

func (q *queryParser) get(name string) (string, bool) {
	v, ok := q.c.GetQuery(name)
	return v, ok && v != ""
}

func (q *queryParser) int(name string) *int {
	v, ok := q.get(name)
	if !ok {
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		q.fail(badRequest(name, "expected an integer, got %q", v))
		return nil
	}
	return &n
}

func (q *queryParser) int64(name string) *int64 {
	v, ok := q.get(name)
	if !ok {
		return nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		q.fail(badRequest(name, "expected an integer, got %q", v))
		return nil
	}
	return &n
}

func (q *queryParser) float(name string) *float64 {
	v, ok := q.get(name)
	if !ok {
		return nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		q.fail(badRequest(name, "expected a number, got %q", v))
		return nil
	}
	return &f
}

func (q *queryParser) boolean(name string) bool {
	v, ok := q.get(name)
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		q.fail(badRequest(name, "expected true or false, got %q", v))
	}
	return b
}

func (q *queryParser) fail(e *apiError) {
	if q.err == nil {
		q.err = e
	}
}
