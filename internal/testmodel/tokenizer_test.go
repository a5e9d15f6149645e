package testmodel

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/magicconch/conch/llama"
)

// readVectors parses llama.cpp's tokenizer test vectors: <vocab>.inp holds the inputs,
// each followed by "\n__ggml_vocab_test__\n"; <vocab>.out one line of ids per input.
func readVectors(t *testing.T, name string) ([]string, [][]llama.Token) {
	t.Helper()
	inp, err := readShared("tokenizers", "vocab-gguf", name+".inp")
	if err != nil {
		t.Fatal(err)
	}
	out, err := readShared("tokenizers", "vocab-gguf", name+".out")
	if err != nil {
		t.Fatal(err)
	}
	const sep = "\n__ggml_vocab_test__\n"
	var texts []string
	for {
		i := strings.Index(inp, sep)
		if i < 0 {
			break
		}
		texts = append(texts, inp[:i])
		inp = inp[i+len(sep):]
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(texts) != len(lines) || len(texts) < 20 {
		t.Fatalf("%s: %d inputs but %d outputs", name, len(texts), len(lines))
	}
	ids := make([][]llama.Token, len(lines))
	for i, l := range lines {
		for _, f := range strings.Fields(l) {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s.out line %d: %v", name, i+1, err)
			}
			ids[i] = append(ids[i], llama.Token(n))
		}
	}
	return texts, ids
}

// TestTokenizerVectors checks our Tokenize binding (and, for qwen2, the vocabulary this
// package assembles from vocab.json and merges.txt) against llama.cpp's own test vectors.
func TestTokenizerVectors(t *testing.T) {
	cases := []struct {
		vectors string
		model   func(t *testing.T) string
	}{
		// ggml-vocab-qwen2.gguf itself is not in shared/data: use our tiny Qwen2 model.
		{"ggml-vocab-qwen2.gguf", func(t *testing.T) string { return Cached(t, Tiny("qwen2")) }},
		{"ggml-vocab-llama-spm.gguf", vocabFile},
		{"ggml-vocab-gpt-2.gguf", vocabFile},
		{"ggml-vocab-phi-3.gguf", vocabFile},
		{"ggml-vocab-deepseek-coder.gguf", vocabFile},
		{"ggml-vocab-deepseek-llm.gguf", vocabFile},
	}
	for _, c := range cases {
		t.Run(strings.TrimSuffix(strings.TrimPrefix(c.vectors, "ggml-vocab-"), ".gguf"), func(t *testing.T) {
			texts, want := readVectors(t, c.vectors)
			path := c.model(t)
			if path == "" {
				var err error
				if path, err = SharedFile("tokenizers", "vocab-gguf", c.vectors); err != nil {
					t.Fatal(err)
				}
			}
			m, err := llama.LoadModel(path, llama.ModelParams{VocabOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for i, text := range texts {
				got, err := m.Tokenize(text, false, false)
				if err != nil {
					t.Fatalf("case %d %q: %v", i, text, err)
				}
				if !slices.Equal(got, want[i]) {
					t.Errorf("case %d %q:\n got %v\nwant %v", i, text, got, want[i])
				}
			}
		})
	}
}

// vocabFile means "the vocab-gguf file named by the vectors".
func vocabFile(*testing.T) string { return "" }

// TestQwen2KnownIDs pins a few Qwen2 tokenizations, Chinese included, that any Qwen2.5
// GGUF gives.
func TestQwen2KnownIDs(t *testing.T) {
	m, err := llama.LoadModel(Cached(t, Tiny("qwen2")), llama.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct {
		text string
		want []llama.Token
	}{
		{"Hello world", []llama.Token{9707, 1879}},
		{"<|im_start|>system\n", []llama.Token{151644, 8948, 198}},
	} {
		got, err := m.Tokenize(c.text, false, true)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%q: got %v %v, want %v", c.text, got, err, c.want)
		}
	}
	zh := "请问你是谁"
	got, err := m.Tokenize(zh, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || len(got) >= len([]rune(zh))+2 || m.Detokenize(got, false, false) != zh {
		t.Fatalf("%q -> %v -> %q", zh, got, m.Detokenize(got, false, false))
	}
}

func TestDeepSeekR1Vocab(t *testing.T) {
	spec := Spec{Name: "tiny-r1-qwen", Arch: "qwen2", Vocab: VocabDeepSeekR1Qwen, NEmbd: 16, NLayer: 1, NHead: 2, NFF: 32, Tied: true}
	m, err := llama.LoadModel(Cached(t, spec), llama.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.BOS() != 151646 || m.EOS() != 151643 || !m.AddBOS() {
		t.Fatalf("bos %d eos %d addBOS %v", m.BOS(), m.EOS(), m.AddBOS())
	}
	want, err := readShared("chat-templates", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")
	if err != nil || m.ChatTemplate() != want {
		t.Fatalf("chat template is not DeepSeek-R1's (%v)", err)
	}
	got, err := m.Tokenize("<｜User｜>hi<think>", true, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0] != 151646 || got[1] != 151644 || got[3] != 151648 {
		t.Fatalf("special tokens: %v", got)
	}
}
