package dataset

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/magicconch/conch/llama"
)

// The real Qwen2 tokenizer GGUF is not in shared/data (too big), but its parts are:
// vocab.json, merges.txt and the added tokens. The tests write a vocabulary-only GGUF
// from them once per run, checked against llama.cpp's own Qwen2 tokenizer test vectors.

// sharedData finds shared/data by walking up from the package directory.
func sharedData(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CONCH_SHARED_DATA"); p != "" {
		return p
	}
	dir, _ := os.Getwd()
	for {
		p := filepath.Join(dir, "shared", "data")
		if st, err := os.Stat(filepath.Join(p, "tokenizers")); err == nil && st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("shared/data not found above the package directory")
		}
		dir = parent
	}
}

type ggufKV struct {
	key string
	val any // string, bool, uint32, []string, []int32
}

// writeVocabGGUF writes a GGUF v3 file with metadata only (llama.cpp loads it with
// vocab_only, which reads no hyperparameters).
func writeVocabGGUF(path string, kvs []ggufKV) error {
	var b bytes.Buffer
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	str := func(s string) { w(uint64(len(s))); b.WriteString(s) }
	b.WriteString("GGUF")
	w(uint32(3))
	w(uint64(0))
	w(uint64(len(kvs)))
	for _, kv := range kvs {
		str(kv.key)
		switch v := kv.val.(type) {
		case string:
			w(uint32(8))
			str(v)
		case bool:
			w(uint32(7))
			w(v)
		case uint32:
			w(uint32(4))
			w(v)
		case []string:
			w(uint32(9))
			w(uint32(8))
			w(uint64(len(v)))
			for _, s := range v {
				str(s)
			}
		case []int32:
			w(uint32(9))
			w(uint32(5))
			w(uint64(len(v)))
			w(v)
		default:
			panic("unsupported metadata type")
		}
	}
	for b.Len()%32 != 0 {
		b.WriteByte(0)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

type addedToken struct {
	id      int
	text    string
	control bool
}

// qwenVocabKVs builds the tokenizer metadata of Qwen2.5-Instruct ("qwen") or
// DeepSeek-R1-Distill-Qwen ("deepseek"), which share the BPE and differ in added tokens.
func qwenVocabKVs(t testing.TB, kind string) []ggufKV {
	root := sharedData(t)
	data, err := os.ReadFile(filepath.Join(root, "tokenizers", "qwen2", "vocab.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vocab map[string]int
	if err := json.Unmarshal(data, &vocab); err != nil {
		t.Fatal(err)
	}
	var added []addedToken
	var kvs []ggufKV
	switch kind {
	case "qwen":
		cfg := readJSON(t, filepath.Join(root, "tokenizers", "qwen2", "tokenizer_config.qwen2.5-instruct.json"))
		var dec map[string]struct {
			Content string `json:"content"`
			Special bool   `json:"special"`
		}
		if err := json.Unmarshal(cfg["added_tokens_decoder"], &dec); err != nil {
			t.Fatal(err)
		}
		for id, a := range dec {
			var n int
			json.Unmarshal([]byte(id), &n)
			added = append(added, addedToken{n, a.Content, a.Special})
		}
		tmpl, err := os.ReadFile(filepath.Join(root, "chat-templates", "Qwen-Qwen2.5-7B-Instruct.jinja"))
		if err != nil {
			t.Fatal(err)
		}
		kvs = []ggufKV{{"tokenizer.ggml.pre", "qwen2"}, {"tokenizer.ggml.eos_token_id", uint32(151645)},
			{"tokenizer.ggml.bos_token_id", uint32(151643)}, {"tokenizer.ggml.padding_token_id", uint32(151643)},
			{"tokenizer.ggml.add_bos_token", false}, {"tokenizer.chat_template", string(tmpl)}}
	case "deepseek":
		// As listed in shared/data/SOURCES.md.
		names := []string{"<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>", "<|EOT|>",
			"<think>", "</think>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
			"<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
			"<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"}
		for i, n := range names {
			control := n == dsEnd || n == dsBegin || (strings.HasPrefix(n, "<|") && !strings.HasPrefix(n, "<|fim") && n != "<|repo_name|>" && n != "<|file_sep|>")
			added = append(added, addedToken{151643 + i, n, control})
		}
		cfg := readJSON(t, filepath.Join(root, "tokenizers", "deepseek-r1-distill", "tokenizer_config.json"))
		var tmpl string
		json.Unmarshal(cfg["chat_template"], &tmpl)
		kvs = []ggufKV{{"tokenizer.ggml.pre", "deepseek-r1-qwen"}, {"tokenizer.ggml.eos_token_id", uint32(151643)},
			{"tokenizer.ggml.bos_token_id", uint32(151646)}, {"tokenizer.ggml.padding_token_id", uint32(151643)},
			{"tokenizer.ggml.add_bos_token", true}, {"tokenizer.chat_template", tmpl}}
	default:
		t.Fatalf("unknown vocab %q", kind)
	}
	n := len(vocab) + len(added)
	tokens := make([]string, n)
	types := make([]int32, n)
	for s, id := range vocab {
		tokens[id], types[id] = s, 1 // normal
	}
	for _, a := range added {
		tokens[a.id], types[a.id] = a.text, 4 // user-defined
		if a.control {
			types[a.id] = 3
		}
	}
	for i, s := range tokens {
		if s == "" {
			t.Fatalf("vocab %s: no token with id %d", kind, i)
		}
	}
	f, err := os.Open(filepath.Join(root, "tokenizers", "qwen2", "merges.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var merges []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#version") {
			merges = append(merges, l)
		}
	}
	return append([]ggufKV{{"general.architecture", "qwen2"}, {"general.name", kind + " vocab (test)"},
		{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.tokens", tokens}, {"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.merges", merges}}, kvs...)
}

func readJSON(t testing.TB, path string) map[string]json.RawMessage {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

var (
	vocabMu     sync.Mutex
	vocabModels = map[string]*llama.Model{}
	vocabDir    string
)

// vocabModel returns a vocab-only model: "qwen", "deepseek" (built from shared/data) or
// "stories" (the real stories260K model's SPM vocabulary).
func vocabModel(t testing.TB, kind string) *llama.Model {
	t.Helper()
	vocabMu.Lock()
	defer vocabMu.Unlock()
	if m := vocabModels[kind]; m != nil {
		return m
	}
	var path string
	if kind == "stories" {
		path = filepath.Join(sharedData(t), "models", "tinyllamas-stories260K", "stories260K.gguf")
	} else {
		if vocabDir == "" {
			d, err := os.MkdirTemp("", "conch-dataset-test-")
			if err != nil {
				t.Fatal(err)
			}
			vocabDir = d
		}
		path = filepath.Join(vocabDir, kind+".gguf")
		if err := writeVocabGGUF(path, qwenVocabKVs(t, kind)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := llama.LoadModel(path, llama.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	vocabModels[kind] = m
	return m
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, v := range vocabModels {
		v.Close()
	}
	if vocabDir != "" {
		os.RemoveAll(vocabDir)
	}
	os.Exit(code)
}

// The test GGUF must tokenize like llama.cpp's real ggml-vocab-qwen2.gguf.
func TestQwenVocabMatchesLlamaCppVectors(t *testing.T) {
	m := vocabModel(t, "qwen")
	dir := filepath.Join(sharedData(t), "tokenizers", "vocab-gguf")
	inp, err := os.ReadFile(filepath.Join(dir, "ggml-vocab-qwen2.gguf.inp"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(filepath.Join(dir, "ggml-vocab-qwen2.gguf.out"))
	if err != nil {
		t.Fatal(err)
	}
	texts := strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	want := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(texts) != len(want) {
		// The .inp ends with a separator too; drop the empty tail.
		texts = texts[:len(want)]
	}
	for i, text := range texts {
		ids, err := m.Tokenize(text, false, false)
		if err != nil {
			t.Fatal(err)
		}
		var got strings.Builder
		for _, id := range ids {
			got.WriteString(" ")
			got.WriteString(itoa(id))
		}
		if got.String() != want[i] {
			t.Errorf("case %d %q:\n got %s\nwant %s", i, text, got.String(), want[i])
		}
	}
}

func itoa(v int32) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func jsonUnmarshalString(raw json.RawMessage, s *string) error { return json.Unmarshal(raw, s) }
