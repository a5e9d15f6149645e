package api

import (
	"strings"
	"sync"

	"github.com/magicconch/conch/llama"
)

// chatRenderer turns a chat into prompt text the way the model expects it.
type chatRenderer struct {
	model *llama.Model
	warn  sync.Once
	log   func(msg string, args ...any)
}

// render applies the model's chat template and asks for the assistant's turn. A model
// without a template (or one llama.cpp does not recognise) gets the messages' text as a
// plain prompt.
func (r *chatRenderer) render(msgs []llama.Message) (string, error) {
	if r.model.ChatTemplate() != "" {
		text, err := r.model.ApplyChatTemplate("", msgs, true)
		if err == nil {
			return text, nil
		}
		r.warn.Do(func() { r.log("chat template not usable, using plain prompts", "err", err) })
	}
	return plainPrompt(msgs), nil
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

// tokenize turns prompt text into tokens: special-token text (<|im_start|>) becomes the
// special token, and BOS is added when the model wants one but the text (a rendered
// template) does not already begin with it.
func tokenize(m *llama.Model, text string) ([]llama.Token, error) {
	toks, err := m.Tokenize(text, true, true)
	if err != nil {
		return nil, err
	}
	if bos := m.BOS(); bos >= 0 && len(toks) >= 2 && toks[0] == bos && toks[1] == bos {
		toks = toks[1:]
	}
	return toks, nil
}
