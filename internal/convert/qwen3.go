package convert

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	oconvert "github.com/ollama/ollama/convert"
	"github.com/ollama/ollama/fs/ggml"
)

// The pinned ollama converter knows Qwen3 only inside Qwen3-VL, not the plain
// Qwen3ForCausalLM. A dense Qwen3 is a Qwen2 without q/k/v biases plus per-head q/k
// RMSNorm and an explicit head size, so we let ollama parse the tokenizer (the largest
// part, identical to Qwen2's) and write the hyperparameters and tensors ourselves.

type qwen3Config struct {
	HiddenSize            uint32  `json:"hidden_size"`
	NumHiddenLayers       uint32  `json:"num_hidden_layers"`
	IntermediateSize      uint32  `json:"intermediate_size"`
	NumAttentionHeads     uint32  `json:"num_attention_heads"`
	NumKeyValueHeads      uint32  `json:"num_key_value_heads"`
	HeadDim               uint32  `json:"head_dim"`
	MaxPositionEmbeddings uint32  `json:"max_position_embeddings"`
	RopeTheta             float32 `json:"rope_theta"`
	RMSNormEps            float32 `json:"rms_norm_eps"`
	NumExperts            uint32  `json:"num_experts"`
	RopeScaling           *struct {
		Type                          string  `json:"type"`
		RopeType                      string  `json:"rope_type"`
		Factor                        float32 `json:"factor"`
		OriginalMaxPositionEmbeddings uint32  `json:"original_max_position_embeddings"`
	} `json:"rope_scaling"`
}

// qwen3Names maps Hugging Face tensor names to llama.cpp's.
var qwen3Names = strings.NewReplacer(
	"lm_head", "output",
	"model.embed_tokens", "token_embd",
	"model.norm", "output_norm",
	"model.layers", "blk",
	"input_layernorm", "attn_norm",
	"post_attention_layernorm", "ffn_norm",
	"self_attn.q_proj", "attn_q",
	"self_attn.k_proj", "attn_k",
	"self_attn.v_proj", "attn_v",
	"self_attn.o_proj", "attn_output",
	"self_attn.q_norm", "attn_q_norm",
	"self_attn.k_norm", "attn_k_norm",
	"mlp.gate_proj", "ffn_gate",
	"mlp.up_proj", "ffn_up",
	"mlp.down_proj", "ffn_down",
)

var qwen3Tensor = map[string]bool{
	"attn_norm": true, "ffn_norm": true, "attn_q": true, "attn_k": true, "attn_v": true, "attn_output": true,
	"attn_q_norm": true, "attn_k_norm": true, "ffn_gate": true, "ffn_up": true, "ffn_down": true,
}

func writeQwen3(dir string, cfgJSON []byte, weights []stTensor, f *os.File) error {
	var c qwen3Config
	if err := json.Unmarshal(cfgJSON, &c); err != nil {
		return fmt.Errorf("config.json: %v", err)
	}
	if c.NumExperts > 0 {
		return fmt.Errorf("Qwen3 mixture-of-experts models are not supported")
	}
	if c.HiddenSize == 0 || c.NumHiddenLayers == 0 || c.NumAttentionHeads == 0 || c.IntermediateSize == 0 {
		return fmt.Errorf("config.json lacks hidden_size, num_hidden_layers, num_attention_heads or intermediate_size")
	}
	headDim := cmp.Or(c.HeadDim, c.HiddenSize/c.NumAttentionHeads)

	// The tokenizer through ollama, reading the folder as if it held a Qwen2.
	var raw map[string]any
	if err := json.Unmarshal(cfgJSON, &raw); err != nil {
		return fmt.Errorf("config.json: %v", err)
	}
	raw["architectures"] = []string{"Qwen2ForCausalLM"}
	raw["rope_scaling"] = nil // parsed above; ollama's qwen2 path rejects some kinds
	asQwen2, _ := json.Marshal(raw)
	conv, tok, err := oconvert.LoadModelMetadata(overlay{os.DirFS(dir), map[string][]byte{"config.json": asQwen2}})
	if err != nil {
		return err
	}
	kv := oconvert.KV{}
	for k, v := range conv.KV(tok) {
		if !strings.HasPrefix(k, "qwen2.") {
			kv[k] = v
		}
	}
	kv["general.architecture"] = "qwen3"
	kv["qwen3.block_count"] = c.NumHiddenLayers
	kv["qwen3.context_length"] = cmp.Or(c.MaxPositionEmbeddings, 4096)
	kv["qwen3.embedding_length"] = c.HiddenSize
	kv["qwen3.feed_forward_length"] = c.IntermediateSize
	kv["qwen3.attention.head_count"] = c.NumAttentionHeads
	kv["qwen3.attention.head_count_kv"] = cmp.Or(c.NumKeyValueHeads, c.NumAttentionHeads)
	kv["qwen3.attention.key_length"] = headDim
	kv["qwen3.attention.value_length"] = headDim
	kv["qwen3.rope.freq_base"] = cmp.Or(c.RopeTheta, 1e6)
	kv["qwen3.attention.layer_norm_rms_epsilon"] = cmp.Or(c.RMSNormEps, 1e-6)
	if rs := c.RopeScaling; rs != nil {
		switch typ := cmp.Or(rs.RopeType, rs.Type); typ {
		case "", "default":
		case "yarn", "linear":
			kv["qwen3.rope.scaling.type"] = typ
			kv["qwen3.rope.scaling.factor"] = rs.Factor
			if rs.OriginalMaxPositionEmbeddings > 0 {
				kv["qwen3.rope.scaling.original_context_length"] = rs.OriginalMaxPositionEmbeddings
			}
		default:
			return fmt.Errorf("rope_scaling type %q is not supported for Qwen3", typ)
		}
	}

	var ts []*ggml.Tensor
	for _, w := range weights {
		name := qwen3Names.Replace(w.Name)
		if !qwen3Known(name) {
			return fmt.Errorf("unexpected tensor %s for a dense Qwen3 model", w.Name)
		}
		k := storeKind(w)
		ts = append(ts, &ggml.Tensor{Name: name, Kind: k, Shape: ggmlShape(w.Shape), WriterTo: stWriter{w, k}})
	}
	return ggml.WriteGGUF(f, kv, ts)
}

// qwen3Known reports whether name is a tensor of a dense Qwen3 in llama.cpp's naming.
func qwen3Known(name string) bool {
	switch name {
	case "token_embd.weight", "output.weight", "output_norm.weight":
		return true
	}
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return false
	}
	_, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return false
	}
	stem, ok := strings.CutSuffix(rest, ".weight")
	return ok && qwen3Tensor[stem]
}

// overlay is a file system with some files replaced.
type overlay struct {
	fs.FS
	files map[string][]byte
}

func (o overlay) Open(name string) (fs.File, error) {
	if b, ok := o.files[name]; ok {
		return &memFile{Reader: bytes.NewReader(b), name: name, size: int64(len(b))}, nil
	}
	return o.FS.Open(name)
}

type memFile struct {
	*bytes.Reader
	name string
	size int64
}

func (m *memFile) Stat() (fs.FileInfo, error) { return memInfo{m}, nil }
func (m *memFile) Close() error               { return nil }

type memInfo struct{ m *memFile }

func (i memInfo) Name() string       { return i.m.name }
func (i memInfo) Size() int64        { return i.m.size }
func (i memInfo) Mode() fs.FileMode  { return 0o444 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }
