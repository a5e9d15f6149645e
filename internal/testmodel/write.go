package testmodel

import (
	"bufio"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// init says how a tensor's random values are drawn: value = mean + std*N(0,1).
type initDist struct{ mean, std float64 }

type plannedTensor struct {
	info tensorInfo
	dist initDist
}

// plan lists a resolved spec's tensors with llama.cpp's names and ggml shapes
// (src/llama-model.cpp, load_tensors).
func plan(s Spec, nVocab int) []plannedTensor {
	mat := typeF32
	if s.Type == "f16" {
		mat = typeF16
	}
	E, F, D := uint64(s.NEmbd), uint64(s.NFF), uint64(s.HeadDim)
	Q, KV, V := uint64(s.NHead)*D, uint64(s.NHeadKV)*D, uint64(nVocab)
	var ts []plannedTensor
	add := func(name string, typ uint32, d initDist, shape ...uint64) {
		ts = append(ts, plannedTensor{tensorInfo{name: name, shape: shape, typ: typ}, d})
	}
	// Matrices: std 1/sqrt(fan_in) keeps activations near unit scale, so logits have a
	// spread of about 1 (neither constant nor saturated). Norm weights sit near 1.
	weight := func(fanIn uint64) initDist { return initDist{0, 1 / math.Sqrt(float64(fanIn))} }
	norm := initDist{1, 0.05}
	bias := initDist{0, 0.05}

	add("token_embd.weight", mat, weight(E), E, V)
	for i := range s.NLayer {
		b := func(n string) string { return fmt.Sprintf("blk.%d.%s", i, n) }
		add(b("attn_norm.weight"), typeF32, norm, E)
		add(b("attn_q.weight"), mat, weight(E), E, Q)
		if s.Arch == "qwen2" {
			add(b("attn_q.bias"), typeF32, bias, Q)
		}
		add(b("attn_k.weight"), mat, weight(E), E, KV)
		if s.Arch == "qwen2" {
			add(b("attn_k.bias"), typeF32, bias, KV)
		}
		add(b("attn_v.weight"), mat, weight(E), E, KV)
		if s.Arch == "qwen2" {
			add(b("attn_v.bias"), typeF32, bias, KV)
		}
		if s.Arch == "qwen3" {
			add(b("attn_q_norm.weight"), typeF32, norm, D)
			add(b("attn_k_norm.weight"), typeF32, norm, D)
		}
		add(b("attn_output.weight"), mat, weight(Q), Q, E)
		add(b("ffn_norm.weight"), typeF32, norm, E)
		add(b("ffn_gate.weight"), mat, weight(E), E, F)
		add(b("ffn_up.weight"), mat, weight(E), E, F)
		add(b("ffn_down.weight"), mat, weight(F), F, E)
	}
	add("output_norm.weight", typeF32, norm, E)
	if !s.Tied {
		add("output.weight", mat, weight(E), E, V)
	}
	return ts
}

// metadata is the model's GGUF metadata: general.*, the arch hyperparameters llama.cpp
// reads (src/llama-model.cpp, load_hparams), then the tokenizer.
func metadata(s Spec, v *vocab) []kv {
	a := s.Arch + "."
	fileType := uint32(0) // LLAMA_FTYPE_ALL_F32
	if s.Type == "f16" {
		fileType = 1 // LLAMA_FTYPE_MOSTLY_F16
	}
	kvs := []kv{
		kvStr("general.architecture", s.Arch),
		kvStr("general.type", "model"),
		kvStr("general.name", s.Name),
		kvU32("general.file_type", fileType),
		kvU32(a+"vocab_size", uint32(v.n)),
		kvU32(a+"context_length", uint32(s.NCtx)),
		kvU32(a+"embedding_length", uint32(s.NEmbd)),
		kvU32(a+"block_count", uint32(s.NLayer)),
		kvU32(a+"feed_forward_length", uint32(s.NFF)),
		kvU32(a+"attention.head_count", uint32(s.NHead)),
		kvU32(a+"attention.head_count_kv", uint32(s.NHeadKV)),
		kvF32(a+"rope.freq_base", s.RopeTheta),
		kvF32(a+"attention.layer_norm_rms_epsilon", s.Eps),
		kvU32(a+"rope.dimension_count", uint32(s.HeadDim)),
	}
	if s.Arch == "qwen3" || s.HeadDim*s.NHead != s.NEmbd {
		kvs = append(kvs,
			kvU32(a+"attention.key_length", uint32(s.HeadDim)),
			kvU32(a+"attention.value_length", uint32(s.HeadDim)))
	}
	kvs = append(kvs, v.kvs...)
	if !s.NoChatTemplate {
		tmpl := s.ChatTemplate
		if tmpl == "" {
			tmpl = v.template
		}
		if tmpl != "" {
			kvs = append(kvs, kvStr("tokenizer.chat_template", tmpl))
		}
	}
	return kvs
}

// Write writes the model described by s to path (atomically: a temporary file in the
// same folder is renamed into place).
func Write(path string, s Spec) error {
	s, err := s.Resolved()
	if err != nil {
		return err
	}
	v, err := loadVocab(s.Vocab)
	if err != nil {
		return err
	}
	kvs := metadata(s, v)
	ts := plan(s, v.n)
	infos := make([]tensorInfo, len(ts))
	for i, t := range ts {
		infos[i] = t.info
	}
	return writeFile(path, kvs, infos, func(i int, emit func([]float32)) {
		fill(s.Seed, ts[i].info, ts[i].dist, emit)
	})
}

// fill draws a tensor's values in chunks. Each tensor has its own generator seeded from
// (seed, name), so its values do not depend on which other tensors the model has.
func fill(seed uint64, t tensorInfo, d initDist, emit func([]float32)) {
	h := fnv.New64a()
	h.Write([]byte(t.name))
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	buf := make([]float32, 1<<16)
	for left := t.elements(); left > 0; {
		n := min(left, uint64(len(buf)))
		for i := range buf[:n] {
			buf[i] = float32(d.mean + d.std*rng.NormFloat64())
		}
		emit(buf[:n])
		left -= n
	}
}

// writeFile streams a GGUF: data(i, emit) must emit exactly tensor i's element count.
func writeFile(path string, kvs []kv, infos []tensorInfo, data func(i int, emit func([]float32))) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	w := &writer{w: bufio.NewWriterSize(tmp, 1<<20)}
	w.header(kvs, infos)
	for i, t := range infos {
		start := w.n
		data(i, func(v []float32) { w.data(t, v) })
		if w.err == nil && w.n-start != t.bytes() {
			w.err = fmt.Errorf("testmodel: tensor %s: wrote %d bytes, want %d", t.name, w.n-start, t.bytes())
		}
		w.pad()
	}
	if w.err == nil {
		w.err = w.w.Flush()
	}
	if cerr := tmp.Close(); w.err == nil {
		w.err = cerr
	}
	if w.err != nil {
		return fmt.Errorf("write %s: %w", path, w.err)
	}
	return os.Rename(tmp.Name(), path)
}
