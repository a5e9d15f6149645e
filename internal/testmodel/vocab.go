package testmodel

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Vocabularies a Spec can name.
const (
	VocabQwen2          = "qwen2"            // Qwen2/Qwen2.5-Instruct byte-level BPE, 151936 rows
	VocabDeepSeekR1Qwen = "deepseek-r1-qwen" // the same BPE with DeepSeek-R1-Distill's added tokens
	VocabLlamaSPM       = "llama-spm"        // LLaMA's 32000-token SentencePiece vocabulary
)

// Token types as llama.cpp stores them (llama_token_type).
const (
	tokNormal      int32 = 1
	tokControl     int32 = 3
	tokUserDefined int32 = 4
	tokUnused      int32 = 5
)

// qwenVocabRows is the embedding row count of every Qwen2/2.5 and R1-Distill-Qwen model
// (config.json vocab_size): more than the tokenizer has, the rest are padding tokens.
const qwenVocabRows = 151936

// vocab is a tokenizer ready to be written: tokenizer.* metadata in file order.
type vocab struct {
	kvs      []kv
	n        int    // token count = embedding rows
	template string // default chat template ("" none)
}

var vocabs sync.Map // name -> func() (*vocab, error)

// loadVocab returns the named vocabulary, built once per process.
func loadVocab(name string) (*vocab, error) {
	f, _ := vocabs.LoadOrStore(name, sync.OnceValues(func() (*vocab, error) { return buildVocab(name) }))
	return f.(func() (*vocab, error))()
}

func buildVocab(name string) (*vocab, error) {
	switch name {
	case VocabQwen2:
		return qwenVocab(name)
	case VocabDeepSeekR1Qwen:
		return qwenVocab(name)
	}
	// Any other name is one of llama.cpp's vocab-only files: tokenizers/vocab-gguf/ggml-vocab-<name>.gguf.
	path, err := SharedFile("tokenizers", "vocab-gguf", "ggml-vocab-"+name+".gguf")
	if err != nil {
		return nil, fmt.Errorf("unknown vocabulary %q: %w", name, err)
	}
	g, err := readGGUFHeader(path)
	if err != nil {
		return nil, err
	}
	v := &vocab{}
	for _, e := range g.kvs {
		// The chat template is written separately: a Spec may replace or drop it.
		if strings.HasPrefix(e.key, "tokenizer.") && e.key != "tokenizer.chat_template" {
			v.kvs = append(v.kvs, e)
		}
		if e.key == "tokenizer.ggml.tokens" {
			toks, _ := e.val.([]string)
			v.n = len(toks)
		}
		if e.key == "tokenizer.chat_template" {
			v.template, _ = e.val.(string)
		}
	}
	if v.n == 0 {
		return nil, fmt.Errorf("%s: no tokenizer.ggml.tokens", path)
	}
	return v, nil
}

// addedToken is a token HF tokenizers add on top of the BPE vocabulary.
type addedToken struct {
	id      int
	text    string
	special bool
}

// deepSeekR1Added are DeepSeek-R1-Distill-Qwen's added tokens (shared/data/SOURCES.md:
// its tokenizer.json is not available, the list was taken from quoted excerpts).
var deepSeekR1Added = []addedToken{
	{151643, "<｜end▁of▁sentence｜>", true},
	{151644, "<｜User｜>", false},
	{151645, "<｜Assistant｜>", false},
	{151646, "<｜begin▁of▁sentence｜>", true},
	{151647, "<|EOT|>", false},
	{151648, "<think>", false},
	{151649, "</think>", false},
	{151650, "<|quad_start|>", true},
	{151651, "<|quad_end|>", true},
	{151652, "<|vision_start|>", true},
	{151653, "<|vision_end|>", true},
	{151654, "<|vision_pad|>", true},
	{151655, "<|image_pad|>", true},
	{151656, "<|video_pad|>", true},
	{151657, "<tool_call>", false},
	{151658, "</tool_call>", false},
	{151659, "<|fim_prefix|>", false},
	{151660, "<|fim_middle|>", false},
	{151661, "<|fim_suffix|>", false},
	{151662, "<|fim_pad|>", false},
	{151663, "<|repo_name|>", false},
	{151664, "<|file_sep|>", false},
}

// looksSpecial mirrors how llama.cpp's converter types added tokens: special ones and
// anything shaped like <|...|> or <｜...｜> become control tokens, the rest user-defined.
func looksSpecial(a addedToken) bool {
	t := a.text
	return a.special ||
		strings.HasPrefix(t, "<|") && strings.HasSuffix(t, "|>") ||
		strings.HasPrefix(t, "<｜") && strings.HasSuffix(t, "｜>")
}

// qwenVocab assembles the GGUF tokenizer the way llama.cpp's HF converter does, from
// tokenizers/qwen2/{vocab.json,merges.txt} plus the model family's added tokens.
func qwenVocab(name string) (*vocab, error) {
	dir, err := SharedFile("tokenizers", "qwen2")
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "vocab.json"))
	if err != nil {
		return nil, err
	}
	var ids map[string]int
	if err := json.Unmarshal(raw, &ids); err != nil {
		return nil, fmt.Errorf("vocab.json: %w", err)
	}
	tokens := make([]string, qwenVocabRows)
	types := make([]int32, qwenVocabRows)
	for t, id := range ids {
		if id < 0 || id >= qwenVocabRows || tokens[id] != "" {
			return nil, fmt.Errorf("vocab.json: bad or duplicate id %d", id)
		}
		tokens[id] = t
		types[id] = tokNormal
	}

	var added []addedToken
	var bos, eos, pad uint32
	var addBOS bool
	var template string
	switch name {
	case VocabQwen2:
		added, err = qwenAdded(dir)
		if err != nil {
			return nil, err
		}
		bos, eos, pad = 151643, 151645, 151643 // <|endoftext|>, <|im_end|>, <|endoftext|>
		template, err = readShared("chat-templates", "Qwen-Qwen2.5-7B-Instruct.jinja")
	case VocabDeepSeekR1Qwen:
		added = deepSeekR1Added
		bos, eos, pad = 151646, 151643, 151643
		addBOS = true
		template, err = readShared("chat-templates", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")
	}
	if err != nil {
		return nil, err
	}
	for _, a := range added {
		if a.id < 0 || a.id >= qwenVocabRows || tokens[a.id] != "" {
			return nil, fmt.Errorf("added token %q: bad or duplicate id %d", a.text, a.id)
		}
		tokens[a.id] = a.text
		types[a.id] = tokUserDefined
		if looksSpecial(a) {
			types[a.id] = tokControl
		}
	}
	for i := range tokens {
		if tokens[i] == "" {
			tokens[i] = fmt.Sprintf("[PAD%d]", i)
			types[i] = tokUnused
		}
	}

	merges, err := readMerges(filepath.Join(dir, "merges.txt"))
	if err != nil {
		return nil, err
	}
	v := &vocab{n: qwenVocabRows, template: template}
	v.kvs = []kv{
		kvStr("tokenizer.ggml.model", "gpt2"),
		kvStr("tokenizer.ggml.pre", name),
		kvStrs("tokenizer.ggml.tokens", tokens),
		kvI32s("tokenizer.ggml.token_type", types),
		kvStrs("tokenizer.ggml.merges", merges),
		kvU32("tokenizer.ggml.eos_token_id", eos),
		kvU32("tokenizer.ggml.padding_token_id", pad),
		kvU32("tokenizer.ggml.bos_token_id", bos),
		kvBool("tokenizer.ggml.add_bos_token", addBOS),
	}
	if name == VocabDeepSeekR1Qwen {
		v.kvs = append(v.kvs, kvBool("tokenizer.ggml.add_eos_token", false))
	}
	return v, nil
}

// qwenAdded reads Qwen2.5-Instruct's added tokens with their special flags from its
// tokenizer_config.json.
func qwenAdded(dir string) ([]addedToken, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.qwen2.5-instruct.json"))
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Added map[string]struct {
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens_decoder"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("tokenizer_config: %w", err)
	}
	var out []addedToken
	for k, a := range cfg.Added {
		var id int
		if _, err := fmt.Sscan(k, &id); err != nil {
			return nil, fmt.Errorf("tokenizer_config: bad token id %q", k)
		}
		out = append(out, addedToken{id, a.Content, a.Special})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("tokenizer_config: no added tokens")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, nil
}

func readMerges(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#version") || line == "" {
			continue
		}
		out = append(out, line)
	}
	return out, sc.Err()
}

func readShared(rel ...string) (string, error) {
	p, err := SharedFile(rel...)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	return string(b), err
}
