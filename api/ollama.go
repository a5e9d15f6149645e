package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/magicconch/conch/internal/chat"
	"github.com/magicconch/conch/internal/engine"
	"github.com/magicconch/conch/llama"
)

// Ollama's own API (/api/generate, /api/chat, /api/tags), for the tools and client
// libraries written against Ollama. Answers stream as JSON lines unless "stream": false,
// and errors are {"error": "..."} as Ollama writes them.

const ollamaStyle = "conch.ollama" // gin context key: answer errors the Ollama way

type ollamaOptions struct {
	Temperature      *float64 `json:"temperature"`
	TopP             *float64 `json:"top_p"`
	TopK             *int     `json:"top_k"`
	MinP             *float64 `json:"min_p"`
	Seed             *int64   `json:"seed"`
	NumPredict       *int     `json:"num_predict"` // <= 0: until the context is full
	Stop             []string `json:"stop"`
	RepeatPenalty    *float64 `json:"repeat_penalty"`
	PresencePenalty  *float64 `json:"presence_penalty"`
	FrequencyPenalty *float64 `json:"frequency_penalty"`
}

// ollamaCommon are the fields /api/generate and /api/chat share. Fields a model here
// cannot honour (images, structured output, tools) are refused rather than ignored.
type ollamaCommon struct {
	Model     string          `json:"model"`
	Stream    *bool           `json:"stream"`
	Options   ollamaOptions   `json:"options"`
	Format    json.RawMessage `json:"format"`
	Images    []string        `json:"images"`
	Tools     json.RawMessage `json:"tools"`
	KeepAlive json.RawMessage `json:"keep_alive"` // accepted; the model stays loaded anyway
}

type ollamaGenerateRequest struct {
	ollamaCommon
	Prompt string `json:"prompt"`
	System string `json:"system"`
	Raw    bool   `json:"raw"`
}

type ollamaMessage struct {
	Role    string   `json:"role"`
	Content string   `json:"content"`
	Images  []string `json:"images,omitempty"`
}

type ollamaChatRequest struct {
	ollamaCommon
	Messages []ollamaMessage `json:"messages"`
}

// ollamaResponse is one line of an answer; the last has Done and the counts.
type ollamaResponse struct {
	Model              string         `json:"model"`
	CreatedAt          time.Time      `json:"created_at"`
	Response           *string        `json:"response,omitempty"`
	Message            *ollamaMessage `json:"message,omitempty"`
	Done               bool           `json:"done"`
	DoneReason         string         `json:"done_reason,omitempty"`
	TotalDuration      int64          `json:"total_duration,omitempty"`
	PromptEvalCount    int            `json:"prompt_eval_count,omitempty"`
	PromptEvalDuration int64          `json:"prompt_eval_duration,omitempty"`
	EvalCount          int            `json:"eval_count,omitempty"`
	EvalDuration       int64          `json:"eval_duration,omitempty"`
}

type ollamaModel struct {
	Name       string             `json:"name"`
	Model      string             `json:"model"`
	ModifiedAt time.Time          `json:"modified_at"`
	Size       int64              `json:"size"`
	Digest     string             `json:"digest"`
	Details    ollamaModelDetails `json:"details"`
}

type ollamaModelDetails struct {
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

// ollamaErrors makes abort answer {"error": "..."} on this route group.
func ollamaErrors(c *gin.Context) { c.Set(ollamaStyle, true) }

func (s *Server) ollamaTags(c *gin.Context) {
	e := s.ready(c)
	if e == nil {
		return
	}
	m := e.Model()
	d := ollamaModelDetails{Format: "gguf", Family: m.Arch(), Families: []string{m.Arch()}, ParameterSize: paramSize(m.Params())}
	// llama.cpp's description is "<arch> <size class> <weight type>"
	if f := strings.Fields(m.Desc()); len(f) > 2 {
		d.QuantizationLevel = strings.Join(f[2:], " ")
	}
	at := time.Unix(s.created.Load(), 0).UTC()
	models := []ollamaModel{{Name: s.cfg.ModelName, Model: s.cfg.ModelName, ModifiedAt: at, Size: int64(m.Size()), Details: d}}
	for _, a := range e.Adapters() {
		models = append(models, ollamaModel{Name: a, Model: a, ModifiedAt: at, Size: int64(m.Size()), Details: d})
	}
	c.JSON(http.StatusOK, gin.H{"models": models})
}

// paramSize writes a parameter count as Ollama does: "494.0M", "1.8B".
func paramSize(n uint64) string {
	if n >= 1e9 {
		return fmt.Sprintf("%.1fB", float64(n)/1e9)
	}
	return fmt.Sprintf("%.1fM", float64(n)/1e6)
}

// options maps Ollama's settings onto ours and refuses what cannot be honoured.
func (r *ollamaCommon) options() (options, *apiError) {
	switch {
	case len(r.Images) > 0:
		return options{}, badRequest("images", "this model reads text only")
	case len(r.Format) > 0 && string(r.Format) != "null" && string(r.Format) != `""`:
		return options{}, badRequest("format", "structured output is not supported")
	case len(r.Tools) > 0 && string(r.Tools) != "null" && string(r.Tools) != "[]":
		return options{}, badRequest("tools", "tool calls are not supported")
	}
	o := r.Options
	mo := options{Temperature: o.Temperature, TopP: o.TopP, TopK: o.TopK, MinP: o.MinP, Seed: o.Seed, Stop: o.Stop,
		RepeatPenalty: o.RepeatPenalty, PresencePenalty: o.PresencePenalty, FrequencyPenalty: o.FrequencyPenalty}
	// What Ollama samples with when a request leaves these out (its documented defaults).
	if mo.Temperature == nil {
		mo.Temperature = ptr(0.8)
	}
	if mo.TopK == nil {
		mo.TopK = ptr(40)
	}
	if mo.TopP == nil {
		mo.TopP = ptr(0.9)
	}
	if o.NumPredict != nil && *o.NumPredict > 0 {
		mo.MaxTokens = o.NumPredict
	}
	if mo.Seed != nil && *mo.Seed < 0 { // Ollama's "no seed"
		mo.Seed = nil
	}
	return mo, nil
}

func ptr[T any](v T) *T { return &v }

// modelName maps Ollama's "name:tag" to a served model ("latest" is no tag).
func (r *ollamaCommon) modelName() string { return strings.TrimSuffix(r.Model, ":latest") }

func (s *Server) ollamaGenerate(c *gin.Context) {
	var body ollamaGenerateRequest
	e, o, adapter, ok := s.begin(c, &body)
	if !ok {
		return
	}
	if body.Prompt == "" {
		// Ollama's way to load a model: nothing to generate.
		c.JSON(http.StatusOK, ollamaResponse{Model: s.modelID(adapter), CreatedAt: time.Now().UTC(), Response: new(string), Done: true, DoneReason: "load"})
		return
	}
	var p chat.Prompt
	var err error
	if body.Raw {
		p.Tokens, err = chat.Tokenize(e.Model(), body.Prompt)
	} else {
		var msgs []llama.Message
		if body.System != "" {
			msgs = append(msgs, llama.Message{Role: "system", Content: body.System})
		}
		p, err = s.renderer(e).Render(append(msgs, llama.Message{Role: "user", Content: body.Prompt}))
	}
	if err != nil {
		abort(c, badRequest("prompt", "%v", err))
		return
	}
	s.ollamaAnswer(c, e, o, p, adapter, "prompt", body.Stream, func(r *ollamaResponse, text string) {
		r.Response = &text
	})
}

func (s *Server) ollamaChat(c *gin.Context) {
	var body ollamaChatRequest
	e, o, adapter, ok := s.begin(c, &body)
	if !ok {
		return
	}
	if len(body.Messages) == 0 {
		c.JSON(http.StatusOK, ollamaResponse{Model: s.modelID(adapter), CreatedAt: time.Now().UTC(),
			Message: &ollamaMessage{Role: "assistant"}, Done: true, DoneReason: "load"})
		return
	}
	in := make([]chatMessage, len(body.Messages))
	for i, m := range body.Messages {
		if len(m.Images) > 0 {
			abort(c, badRequest("messages", "this model reads text only"))
			return
		}
		in[i] = chatMessage{Role: m.Role, Content: messageContent{Text: m.Content}}
	}
	p, ok := s.renderChat(c, e, in)
	if !ok {
		return
	}
	s.ollamaAnswer(c, e, o, p, adapter, "messages", body.Stream, func(r *ollamaResponse, text string) {
		r.Message = &ollamaMessage{Role: "assistant", Content: text}
	})
}

// ollamaAnswer runs a request and answers in Ollama's shape: JSON lines while streaming
// (the default), else one object; fill puts the text where the endpoint wants it.
func (s *Server) ollamaAnswer(c *gin.Context, e *engine.Engine, o options, p chat.Prompt, adapter, param string,
	stream *bool, fill func(*ollamaResponse, string)) {
	r := s.start(c, e, o, p, adapter, param)
	if r == nil {
		return
	}
	defer r.cancel()
	line := func(text string) *ollamaResponse {
		out := &ollamaResponse{Model: r.model, CreatedAt: time.Now().UTC()}
		fill(out, text)
		return out
	}
	last := func(text string, res engine.Result) *ollamaResponse {
		out := line(text)
		out.Done, out.DoneReason = true, res.FinishReason
		out.TotalDuration = res.Total.Nanoseconds()
		out.PromptEvalCount, out.EvalCount = res.PromptTokens, res.Tokens
		out.PromptEvalDuration = max(0, res.FirstToken-res.QueueTime).Nanoseconds()
		out.EvalDuration = max(0, res.Total-res.FirstToken).Nanoseconds()
		return out
	}
	if stream != nil && !*stream {
		out, res, ok := s.wait(c, r.ctx, r.cancel, r.model, r.st)
		if ok {
			c.JSON(http.StatusOK, last(out, res))
		}
		return
	}
	c.Header("Content-Type", "application/x-ndjson")
	c.Status(http.StatusOK)
	enc := json.NewEncoder(c.Writer)
	send := func(v any) error {
		if err := enc.Encode(v); err != nil {
			return err
		}
		c.Writer.Flush()
		return nil
	}
	res, ok := s.relay(c, r, func(t string) error { return send(line(t)) },
		func(e *apiError) { send(gin.H{"error": e.Message}) })
	if ok {
		send(last("", res))
	}
}
