package llama

import (
	"context"
	"testing"
	"unicode/utf8"

	"github.com/magicconch/conch/internal/testmodel"
)

// A random model with the Qwen2 vocabulary emits arbitrary tokens, many of them parts of
// multi-byte characters: every streamed piece must still be whole UTF-8.
func TestGenerateStreamsWholeCharacters(t *testing.T) {
	m, err := LoadModel(testmodel.Cached(t, testmodel.Tiny("qwen2")), ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, err := NewContext(m, ContextParams{NCtx: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	prompt, _ := m.Tokenize("蟹堡王的神奇海螺", false, false)
	multiByte, partial := 0, 0
	for seed := uint32(1); seed <= 4; seed++ {
		res, err := ctx.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 120,
			Sampler: SamplerParams{Temperature: 1, Seed: seed}}, func(s string) bool {
			if !utf8.ValidString(s) {
				t.Fatalf("streamed piece %q is not valid UTF-8", s)
			}
			for _, r := range s {
				if utf8.RuneLen(r) > 1 {
					multiByte++
				}
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.ValidString(res.Text) {
			t.Fatalf("text %q is not valid UTF-8", res.Text)
		}
	}
	// the test means something only if tokens really split characters
	for tk := Token(0); tk < Token(m.VocabSize()); tk++ {
		if !utf8.Valid(m.Piece(tk, false)) {
			partial++
		}
	}
	if multiByte == 0 || partial == 0 {
		t.Fatalf("multi-byte characters streamed: %d, vocabulary pieces that are partial UTF-8: %d", multiByte, partial)
	}
}
