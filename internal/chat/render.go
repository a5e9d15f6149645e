// Package chat turns a conversation into prompt tokens the way a model expects them, for
// inference: conchd's endpoints and conch's generate --chat and chat all ask through it.
package chat

import (
	"strings"
	"sync"

	"github.com/magicconch/conch/internal/dataset"
	"github.com/magicconch/conch/llama"
)

// Renderer turns a chat into prompt tokens the way the model expects them: with the
// same template code fine-tuning used (internal/dataset), so a fine-tuned model is asked
// in exactly the format it learned. A template that code does not recognise goes through
// llama.cpp's built-in templates, and a model without any template gets plain text.
type Renderer struct {
	model *llama.Model
	tmpl  *dataset.Template // nil: not recognised
	stops []string          // template stop texts that are not single special tokens
	stopT []llama.Token     // template stop texts that are (<|im_end|>)
	warn  sync.Once
	log   func(msg string, args ...any)
}

// NewRenderer picks how to render chats for m; log hears why it falls back, if it does.
func NewRenderer(m *llama.Model, log func(msg string, args ...any)) *Renderer {
	r := &Renderer{model: m, log: log}
	t, err := dataset.TemplateForModel(m.ChatTemplate(), m.Arch())
	if err != nil {
		log("chat template not recognised: using llama.cpp's template support", "err", err)
		return r
	}
	r.tmpl = t
	for _, s := range t.Stop {
		if toks, err := m.Tokenize(s, false, true); err == nil && len(toks) == 1 && m.TokenText(toks[0]) == s {
			r.stopT = append(r.stopT, toks[0])
		} else {
			r.stops = append(r.stops, s)
		}
	}
	return r
}

// Prompt is a rendered chat: its tokens and what ends the answer besides EOS.
type Prompt struct {
	Tokens     []llama.Token
	Stops      []string
	StopTokens []llama.Token
}

// Render renders msgs and the start of the assistant's answer.
func (r *Renderer) Render(msgs []llama.Message) (Prompt, error) {
	if r.tmpl != nil {
		c := dataset.Conversation{Messages: make([]dataset.Message, len(msgs))}
		for i, m := range msgs {
			c.Messages[i] = dataset.Message{Role: m.Role, Content: m.Content}
		}
		ids, err := r.tmpl.EncodePrompt(r.model, c)
		if err != nil {
			return Prompt{}, err
		}
		return Prompt{Tokens: ids, Stops: r.stops, StopTokens: r.stopT}, nil
	}
	text := plainPrompt(msgs)
	if r.model.ChatTemplate() != "" {
		t, err := r.model.ApplyChatTemplate("", msgs, true)
		if err == nil {
			text = t
		} else {
			r.warn.Do(func() { r.log("chat template not usable, using plain prompts", "err", err) })
		}
	}
	toks, err := Tokenize(r.model, text)
	return Prompt{Tokens: toks}, err
}

// plainPrompt is the fallback for models without a chat template: one user message is
// the prompt as is; a longer chat becomes its messages' texts, one per paragraph.
func plainPrompt(msgs []llama.Message) string {
	if len(msgs) == 1 {
		return msgs[0].Content
	}
	parts := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if m.Content != "" {
			parts = append(parts, m.Content)
		}
	}
	return strings.Join(parts, "\n\n")
}

// Tokenize turns raw prompt text into tokens: special-token text (<|im_start|>) becomes
// the special token, and BOS is added when the model wants one but the text does not
// already begin with it.
func Tokenize(m *llama.Model, text string) ([]llama.Token, error) {
	toks, err := m.Tokenize(text, true, true)
	if err != nil {
		return nil, err
	}
	if bos := m.BOS(); bos >= 0 && len(toks) >= 2 && toks[0] == bos && toks[1] == bos {
		toks = toks[1:]
	}
	return toks, nil
}
