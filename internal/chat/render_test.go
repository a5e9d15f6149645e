package chat

import (
	"strings"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

func load(t *testing.T, path string) *llama.Model {
	t.Helper()
	m, err := llama.LoadModel(path, llama.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// A recognised template renders as fine-tuning did, with <|im_end|> as a stop token; a
// model without a template gets the message text as is.
func TestRender(t *testing.T) {
	qwen := load(t, testmodel.Cached(t, testmodel.Tiny("qwen2")))
	r := NewRenderer(qwen, func(msg string, _ ...any) { t.Errorf("unexpected fallback: %s", msg) })
	p, err := r.Render([]llama.Message{{Role: "user", Content: "请问你是谁"}})
	if err != nil {
		t.Fatal(err)
	}
	text := qwen.Detokenize(p.Tokens, false, true)
	if !strings.Contains(text, "<|im_start|>user\n请问你是谁<|im_end|>") || !strings.HasSuffix(text, "<|im_start|>assistant\n") {
		t.Fatalf("rendered %q", text)
	}
	if len(p.StopTokens) != 1 || qwen.TokenText(p.StopTokens[0]) != "<|im_end|>" {
		t.Fatalf("stop tokens %v, stops %q", p.StopTokens, p.Stops)
	}

	path, err := testmodel.Stories260K()
	if err != nil {
		t.Skip(err)
	}
	plain := load(t, path)
	p, err = NewRenderer(plain, func(string, ...any) {}).Render([]llama.Message{{Role: "user", Content: "Once upon a time"}})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Tokenize(plain, "Once upon a time")
	if len(p.Tokens) != len(want) || plain.Detokenize(p.Tokens, false, false) != plain.Detokenize(want, false, false) {
		t.Fatalf("plain prompt %v, want %v", p.Tokens, want)
	}
}
