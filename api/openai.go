package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/magicconch/conch/internal/chat"
	"github.com/magicconch/conch/internal/engine"
	"github.com/magicconch/conch/llama"
)

const fingerprint = "conch"

func (s *Server) modelID(adapter string) string {
	if adapter == "" {
		return s.cfg.ModelName
	}
	return adapter
}

func (s *Server) listModels(c *gin.Context) {
	e := s.ready(c)
	if e == nil {
		return
	}
	list := modelList{Object: "list", Data: []modelCard{{ID: s.cfg.ModelName, Object: "model", Created: s.created.Load(), OwnedBy: "conch"}}}
	for _, a := range e.Adapters() {
		list.Data = append(list.Data, modelCard{ID: a, Object: "model", Created: s.created.Load(), OwnedBy: "conch"})
	}
	c.JSON(http.StatusOK, list)
}

func (s *Server) getModel(c *gin.Context) {
	e := s.ready(c)
	if e == nil {
		return
	}
	id := c.Param("model")
	if _, err := s.resolveModel(e, id); err != nil || id == "" {
		abort(c, errModelNotFound(id))
		return
	}
	c.JSON(http.StatusOK, modelCard{ID: id, Object: "model", Created: s.created.Load(), OwnedBy: "conch"})
}

// renderChat validates a chat and renders it with the model's template. On failure it has
// answered and ok is false.
func (s *Server) renderChat(c *gin.Context, e *engine.Engine, in []chatMessage) (p chat.Prompt, ok bool) {
	msgs, aerr := chatMessages(in)
	if aerr != nil {
		abort(c, aerr)
		return p, false
	}
	p, err := s.renderer(e).Render(msgs)
	if err != nil {
		abort(c, badRequest("messages", "%v", err))
		return p, false
	}
	return p, true
}

// chatMessages validates the chat and converts it for the template.
func chatMessages(in []chatMessage) ([]llama.Message, *apiError) {
	if len(in) == 0 {
		return nil, badRequest("messages", "at least one message is required")
	}
	out := make([]llama.Message, 0, len(in))
	for i, m := range in {
		role := m.Role
		switch role {
		case "system", "user", "assistant":
		case "developer": // OpenAI's newer name for system
			role = "system"
		case "":
			return nil, badRequest(fmt.Sprintf("messages[%d].role", i), "missing")
		default:
			return nil, badRequest(fmt.Sprintf("messages[%d].role", i), "unsupported role %q (system, user, assistant)", m.Role)
		}
		if m.Content.Null && role != "assistant" {
			return nil, badRequest(fmt.Sprintf("messages[%d].content", i), "missing")
		}
		out = append(out, llama.Message{Role: role, Content: m.Content.Text})
	}
	return out, nil
}

func (s *Server) chatCompletions(c *gin.Context) {
	var body chatRequest
	e, o, adapter, ok := s.begin(c, &body)
	if !ok {
		return
	}
	p, ok := s.renderChat(c, e, body.Messages)
	if !ok {
		return
	}
	r := s.start(c, e, o, p, adapter, "messages")
	if r == nil {
		return
	}
	defer r.cancel()
	ctx, cancel, model, st := r.ctx, r.cancel, r.model, r.st
	id, created := newID("chatcmpl-"), time.Now().Unix()
	if !body.Stream {
		out, res, ok := s.wait(c, ctx, cancel, model, st)
		if !ok {
			return
		}
		choice := chatChoice{Message: chatResponseMessage{Role: "assistant", Content: out}, FinishReason: res.FinishReason}
		if o.Logprobs {
			choice.Logprobs = logprobsOf(e.Model(), st.TakeLogprobs())
		}
		c.JSON(http.StatusOK, chatResponse{
			ID: id, Object: "chat.completion", Created: created, Model: model, SystemFingerprint: fingerprint,
			Choices: []chatChoice{choice}, Usage: usageOf(res),
		})
		return
	}
	w := newSSE(c)
	// Each chunk carries the log probabilities of the tokens generated since the last one.
	chunk := func(d chatDelta, finish *string) chatChunk {
		ch := chatChunkChoice{Delta: d, FinishReason: finish}
		if o.Logprobs {
			if lp := logprobsOf(e.Model(), st.TakeLogprobs()); lp != nil {
				ch.Logprobs = lp
			}
		}
		return chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: model, SystemFingerprint: fingerprint,
			Choices: []chatChunkChoice{ch}}
	}
	empty := ""
	if w.send("", chunk(chatDelta{Role: "assistant", Content: &empty}, nil)) != nil {
		cancel()
		s.settle(model, st)
		return
	}
	res, ok := s.relay(c, r, func(t string) error { return w.send("", chunk(chatDelta{Content: &t}, nil)) }, w.sendError)
	if !ok {
		return
	}
	reason := res.FinishReason
	w.send("", chunk(chatDelta{}, &reason))
	if body.includeUsage() {
		u := usageOf(res)
		w.send("", chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: model,
			SystemFingerprint: fingerprint, Choices: []chatChunkChoice{}, Usage: &u})
	}
	w.raw("", []byte("[DONE]"))
}

func (s *Server) completions(c *gin.Context) {
	var body completionRequest
	e, o, adapter, ok := s.begin(c, &body)
	if !ok {
		return
	}
	if body.Logprobs != nil {
		if k := *body.Logprobs; k < 0 || k > engine.MaxTopLogprobs {
			abort(c, badRequest("logprobs", "must be between 0 and %d, got %d", engine.MaxTopLogprobs, k))
			return
		}
		o.Logprobs, o.TopLogprobs, o.PromptLogprobs = true, body.Logprobs, body.Echo
	}
	if body.Echo && o.MaxTokens != nil && *o.MaxTokens == 0 {
		// The legacy API's way to score a prompt: echo it and generate nothing.
		o.MaxTokens, o.ScoreOnly = nil, true
	}
	if !body.Prompt.Set {
		abort(c, badRequest("prompt", "missing"))
		return
	}
	var toks []llama.Token
	text := body.Prompt.Text
	if body.Prompt.Tokens != nil {
		nv := int64(e.Model().VocabSize())
		for _, t := range body.Prompt.Tokens {
			if t < 0 || t >= nv {
				abort(c, badRequest("prompt", "token id %d is outside the vocabulary (0..%d)", t, nv-1))
				return
			}
			toks = append(toks, llama.Token(t))
		}
		text = e.Model().Detokenize(toks, false, true)
	} else {
		if text == "" {
			abort(c, badRequest("prompt", "the prompt is empty"))
			return
		}
		var err error
		if toks, err = chat.Tokenize(e.Model(), text); err != nil {
			abort(c, badRequest("prompt", "%v", err))
			return
		}
	}
	r := s.start(c, e, o, chat.Prompt{Tokens: toks}, adapter, "prompt")
	if r == nil {
		return
	}
	defer r.cancel()
	ctx, cancel, model, st := r.ctx, r.cancel, r.model, r.st
	prefix := ""
	lps := &legacyLogprobs{m: e.Model()}
	if body.Echo {
		prefix = text
		if o.Logprobs {
			// The prompt as the model read it, so that its tokens spell the echo.
			lps.first = &toks[0]
			prefix = promptText(e.Model(), toks)
		}
	}
	id, created := newID("cmpl-"), time.Now().Unix()
	resp := func(text string, finish *string, u *usage) completionResponse {
		ch := completionChoice{Text: text, FinishReason: finish}
		if o.Logprobs {
			if lp := lps.render(st.TakeLogprobs()); lp != nil {
				ch.Logprobs = lp
			}
		}
		return completionResponse{ID: id, Object: "text_completion", Created: created, Model: model, SystemFingerprint: fingerprint,
			Choices: []completionChoice{ch}, Usage: u}
	}
	if !body.Stream {
		out, res, ok := s.wait(c, ctx, cancel, model, st)
		if !ok {
			return
		}
		u := usageOf(res)
		c.JSON(http.StatusOK, resp(prefix+out, &res.FinishReason, &u))
		return
	}
	w := newSSE(c)
	if prefix != "" && w.send("", resp(prefix, nil, nil)) != nil {
		cancel()
		s.settle(model, st)
		return
	}
	res, ok := s.relay(c, r, func(t string) error { return w.send("", resp(t, nil, nil)) }, w.sendError)
	if !ok {
		return
	}
	reason := res.FinishReason
	final := resp("", &reason, nil)
	if body.includeUsage() {
		u := usageOf(res)
		w.send("", final)
		final = completionResponse{ID: id, Object: "text_completion", Created: created, Model: model,
			SystemFingerprint: fingerprint, Choices: []completionChoice{}, Usage: &u}
	}
	w.send("", final)
	w.raw("", []byte("[DONE]"))
}
