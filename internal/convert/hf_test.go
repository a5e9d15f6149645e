package convert_test

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

// stEntry is one tensor to write into a safetensors file.
type stEntry struct {
	name  string
	dtype string   // F32, F16, BF16
	shape []uint64 // PyTorch order
	data  []byte
}

// writeSafetensors writes the format by hand: an 8-byte little-endian header length, a
// JSON header (padded with spaces to 8 bytes) and the raw tensor data.
func writeSafetensors(t *testing.T, path string, ts []stEntry) {
	t.Helper()
	sort.Slice(ts, func(i, j int) bool { return ts[i].name < ts[j].name })
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int
	for _, e := range ts {
		hdr[e.name] = map[string]any{"dtype": e.dtype, "shape": e.shape, "data_offsets": []int{off, off + len(e.data)}}
		off += len(e.data)
	}
	h, _ := json.Marshal(hdr)
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	binary.Write(w, binary.LittleEndian, uint64(len(h)))
	w.Write(h)
	for _, e := range ts {
		w.Write(e.data)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func shared(t *testing.T, rel ...string) string {
	t.Helper()
	p, err := testmodel.SharedFile(rel...)
	if err != nil {
		t.Skip(err)
	}
	return p
}

// writeQwenTokenizer writes tokenizer.json (built from the Qwen2 vocab.json, merges.txt and
// added tokens in shared/data: the upstream file is too large to keep there) and
// tokenizer_config.json (Qwen2.5-Instruct's, with its chat template) into dir.
func writeQwenTokenizer(t *testing.T, dir string) {
	t.Helper()
	tf := qwenTokenizer()
	if tf.err != nil {
		t.Skip(tf.err)
	}
	writeFile(t, filepath.Join(dir, "tokenizer.json"), tf.tok)
	writeFile(t, filepath.Join(dir, "tokenizer_config.json"), tf.cfg)
}

type tokenizerFiles struct {
	tok, cfg []byte
	err      error
}

// qwenTokenizer builds the files once per test binary.
var qwenTokenizer = sync.OnceValue(func() tokenizerFiles {
	tok, cfg, err := buildQwenTokenizer()
	return tokenizerFiles{tok, cfg, err}
})

func buildQwenTokenizer() ([]byte, []byte, error) {
	read := func(rel ...string) ([]byte, error) {
		p, err := testmodel.SharedFile(rel...)
		if err != nil {
			return nil, err
		}
		return os.ReadFile(p)
	}
	vb, err := read("tokenizers", "qwen2", "vocab.json")
	if err != nil {
		return nil, nil, err
	}
	var vocab map[string]int
	if err := json.Unmarshal(vb, &vocab); err != nil {
		return nil, nil, err
	}
	mb, err := read("tokenizers", "qwen2", "merges.txt")
	if err != nil {
		return nil, nil, err
	}
	var merges []string
	for _, l := range strings.Split(string(mb), "\n") {
		if l != "" && !strings.HasPrefix(l, "#version") {
			merges = append(merges, l)
		}
	}
	cfgBytes, err := read("tokenizers", "qwen2", "tokenizer_config.qwen2.5-instruct.json")
	if err != nil {
		return nil, nil, err
	}
	var cfg struct {
		Added map[string]struct {
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens_decoder"`
	}
	if err := json.Unmarshal(cfgBytes, &cfg); err != nil {
		return nil, nil, err
	}
	var added []map[string]any
	for id, a := range cfg.Added {
		n, _ := strconv.Atoi(id)
		added = append(added, map[string]any{"id": n, "content": a.Content, "special": a.Special, "single_word": false,
			"lstrip": false, "rstrip": false, "normalized": false})
	}
	sort.Slice(added, func(i, j int) bool { return added[i]["id"].(int) < added[j]["id"].(int) })
	tok := map[string]any{
		"version":      "1.0",
		"added_tokens": added,
		"normalizer":   map[string]any{"type": "NFC"},
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`},
				"behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
		}},
		"decoder": map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
		"model":   map[string]any{"type": "BPE", "vocab": vocab, "merges": merges, "byte_fallback": false},
	}
	b, err := json.Marshal(tok)
	return b, cfgBytes, err
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ggufTensors reads every tensor's raw bytes from a GGUF file.
func ggufTensors(t *testing.T, path string) (*llama.GGUF, map[string][]byte) {
	t.Helper()
	g, err := llama.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	b := mustRead(t, path)
	out := map[string][]byte{}
	for _, ti := range g.Tensors {
		o := g.DataOffset + int64(ti.Offset)
		out[ti.Name] = b[o : o+ti.Size]
	}
	return g, out
}

// hfNames maps llama.cpp's per-block names back to Hugging Face's.
var hfNames = map[string]string{
	"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
	"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
	"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
	"ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}

func hfName(gguf string) string {
	switch gguf {
	case "token_embd.weight":
		return "model.embed_tokens.weight"
	case "output.weight":
		return "lm_head.weight"
	case "output_norm.weight":
		return "model.norm.weight"
	}
	rest := strings.TrimPrefix(gguf, "blk.")
	layer, rest, _ := strings.Cut(rest, ".")
	stem, kind, _ := strings.Cut(rest, ".")
	return "model.layers." + layer + "." + hfNames[stem] + "." + kind
}

// unpermuteRows undoes llama.cpp's q/k row order (pairs interleaved) back to Hugging
// Face's rotary halves, on raw rows of rowBytes bytes: written independently of the
// converter, so that a round trip proves the converter's order.
func unpermuteRows(data []byte, rows, rowBytes, heads int) []byte {
	out := make([]byte, len(data))
	d := rows / heads
	for h := 0; h < heads; h++ {
		for j := 0; j < d/2; j++ {
			for s := 0; s < 2; s++ {
				gg := h*d + 2*j + s     // llama.cpp row
				hf := h*d + s*(d/2) + j // Hugging Face row
				copy(out[hf*rowBytes:(hf+1)*rowBytes], data[gg*rowBytes:(gg+1)*rowBytes])
			}
		}
	}
	return out
}

// exportHF writes the GGUF model at path as a Hugging Face folder (config.json,
// safetensors in shards of about shardBytes, tokenizer files): the inverse of what the
// converter does, so converting it back must give the same tensors.
func exportHF(t *testing.T, path, dir string, shardBytes int) {
	t.Helper()
	g, ts := ggufTensors(t, path)
	arch := g.Arch()
	u := func(k string) uint64 {
		v, ok := g.Uint(arch + "." + k)
		if !ok {
			t.Fatalf("%s: no %s.%s", path, arch, k)
		}
		return v
	}
	fl := func(k string) float64 { v, _ := g.Float(arch + "." + k); return v }
	embd, heads := u("embedding_length"), u("attention.head_count")
	headsKV := heads
	if v, ok := g.Uint(arch + ".attention.head_count_kv"); ok {
		headsKV = v
	}
	tokEmbd, _ := g.Tensor("token_embd.weight")
	_, hasOutput := g.Tensor("output.weight")
	cfg := map[string]any{
		"architectures":           []string{map[string]string{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[arch]},
		"model_type":              arch,
		"hidden_size":             embd,
		"num_hidden_layers":       u("block_count"),
		"intermediate_size":       u("feed_forward_length"),
		"num_attention_heads":     heads,
		"num_key_value_heads":     headsKV,
		"max_position_embeddings": u("context_length"),
		"rope_theta":              fl("rope.freq_base"),
		"rms_norm_eps":            fl("attention.layer_norm_rms_epsilon"),
		"vocab_size":              tokEmbd.Shape[1],
		"tie_word_embeddings":     !hasOutput,
		"torch_dtype":             "float16",
		"hidden_act":              "silu",
	}
	if kl, ok := g.Uint(arch + ".attention.key_length"); ok {
		cfg["head_dim"] = kl
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	writeFile(t, filepath.Join(dir, "config.json"), b)
	writeQwenTokenizer(t, dir)

	var shards [][]stEntry
	var cur []stEntry
	size := 0
	for _, ti := range g.Tensors {
		data := ts[ti.Name]
		dtype := map[string]string{"f32": "F32", "f16": "F16", "bf16": "BF16"}[ti.TypeName()]
		if dtype == "" {
			t.Fatalf("%s: tensor type %s", ti.Name, ti.TypeName())
		}
		shape := make([]uint64, len(ti.Shape))
		for i, d := range ti.Shape {
			shape[len(shape)-1-i] = uint64(d)
		}
		if arch == "llama" && (strings.HasSuffix(ti.Name, "attn_q.weight") || strings.HasSuffix(ti.Name, "attn_k.weight")) {
			h := int(heads)
			if strings.HasSuffix(ti.Name, "attn_k.weight") {
				h = int(headsKV)
			}
			data = unpermuteRows(data, int(ti.Shape[1]), len(data)/int(ti.Shape[1]), h)
		}
		cur = append(cur, stEntry{hfName(ti.Name), dtype, shape, data})
		size += len(data)
		if size >= shardBytes {
			shards, cur, size = append(shards, cur), nil, 0
		}
	}
	if len(cur) > 0 {
		shards = append(shards, cur)
	}
	weightMap := map[string]string{}
	for i, s := range shards {
		name := "model.safetensors"
		if len(shards) > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		}
		for _, e := range s {
			weightMap[e.name] = name
		}
		writeSafetensors(t, filepath.Join(dir, name), s)
	}
	if len(shards) > 1 {
		b, _ := json.Marshal(map[string]any{"metadata": map[string]any{}, "weight_map": weightMap})
		writeFile(t, filepath.Join(dir, "model.safetensors.index.json"), b)
	}
}
