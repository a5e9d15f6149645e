package convert_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/x448/float16"

	"github.com/magicconch/conch/internal/convert"
	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

// roundTripSpec is a small model with the Qwen2 BPE vocabulary (so that every
// architecture can use the same tokenizer.json) and F16 matrices (what the converter
// writes, so tensors must come back byte for byte).
func roundTripSpec(arch string) testmodel.Spec {
	s := testmodel.Tiny(arch)
	if arch == "llama" {
		s = testmodel.Spec{Name: "tiny-llama-bpe", Arch: "llama", NEmbd: 32, NLayer: 2, NHead: 4, NHeadKV: 2, NFF: 64, Seed: 3}
	}
	s.Vocab = testmodel.VocabQwen2
	s.Type = "f16"
	return s
}

const probe = "Hello, Conch! 你好 123"

// logits decodes ids with the model at path (and optional runtime adapters) and returns
// the logits of every position.
// hfAndBase writes a Hugging Face folder for a test model of arch and converts it to
// base.gguf in a folder of its own; it returns both paths.
func hfAndBase(t *testing.T, arch string) (hf, base string) {
	t.Helper()
	hf = t.TempDir()
	exportHF(t, testmodel.Cached(t, roundTripSpec(arch)), hf, 1<<30)
	base = filepath.Join(t.TempDir(), "base.gguf")
	if _, err := convert.Model(context.Background(), hf, base, convert.Options{}); err != nil {
		t.Fatal(err)
	}
	return hf, base
}

func logits(t *testing.T, path string, ids []llama.Token, adapters ...string) [][]float32 {
	t.Helper()
	m, err := llama.LoadModel(path, llama.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, err := llama.NewContext(m, llama.ContextParams{NCtx: 128, KVF32: true, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	for _, p := range adapters {
		a, err := llama.LoadAdapter(m, p)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if err := ctx.SetAdapter(a, 1); err != nil {
			t.Fatal(err)
		}
	}
	b := llama.NewBatch(len(ids))
	defer b.Free()
	for i, id := range ids {
		b.Add(id, i, 0, true)
	}
	if err := ctx.Decode(b); err != nil {
		t.Fatal(err)
	}
	out := make([][]float32, len(ids))
	for i := range ids {
		out[i] = ctx.Logits(i)
	}
	return out
}

func diff(a, b [][]float32) (d, scale float64) {
	for i := range a {
		for j := range a[i] {
			d = math.Max(d, math.Abs(float64(a[i][j]-b[i][j])))
			scale = math.Max(scale, math.Abs(float64(b[i][j])))
		}
	}
	return d, scale
}

func probeIDs(t *testing.T, path string) []llama.Token {
	t.Helper()
	m, err := llama.LoadModel(path, llama.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ids, err := m.Tokenize(probe, false, false)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// A model exported to a Hugging Face folder and converted back has the same tensors,
// byte for byte, and the same logits: for llama (whose q/k rows the converter reorders),
// qwen2 (biases, sharded safetensors) and qwen3 (q/k norms, explicit head size).
func TestConvertRoundTrip(t *testing.T) {
	for _, arch := range []string{"llama", "qwen2", "qwen3"} {
		t.Run(arch, func(t *testing.T) {
			orig := testmodel.Cached(t, roundTripSpec(arch))
			dir := t.TempDir()
			shard := 1 << 30
			if arch == "qwen2" {
				shard = 4 << 20 // several shards and an index
			}
			exportHF(t, orig, dir, shard)
			out := filepath.Join(t.TempDir(), "model.gguf")
			res, err := convert.Model(context.Background(), dir, out, convert.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Arch != arch {
				t.Fatalf("converted to %q", res.Arch)
			}
			og, ot := ggufTensors(t, orig)
			cg, ct := ggufTensors(t, out)
			for _, ti := range og.Tensors {
				ci, ok := cg.Tensor(ti.Name)
				if !ok {
					t.Fatalf("tensor %s missing after conversion", ti.Name)
				}
				if ci.Type != ti.Type || string(ct[ti.Name]) != string(ot[ti.Name]) {
					t.Fatalf("tensor %s differs (%s vs %s)", ti.Name, ci.TypeName(), ti.TypeName())
				}
			}
			if len(cg.Tensors) != len(og.Tensors) {
				t.Fatalf("%d tensors, want %d", len(cg.Tensors), len(og.Tensors))
			}
			ids := probeIDs(t, out)
			if d, _ := diff(logits(t, out, ids), logits(t, orig, ids)); d > 1e-5 {
				t.Fatalf("logits differ by %g", d)
			}
		})
	}
}

// The tiny Qwen2 folder converts to a model with the real Qwen2 tokenizer (llama.cpp's own
// test vectors pass), the chat template and special tokens, and it generates.
func TestConvertQwen2TokenizerAndGenerate(t *testing.T) {
	dir := t.TempDir()
	exportHF(t, testmodel.Cached(t, roundTripSpec("qwen2")), dir, 1<<30)
	out := filepath.Join(t.TempDir(), "q.gguf")
	if _, err := convert.Model(context.Background(), dir, out, convert.Options{}); err != nil {
		t.Fatal(err)
	}
	g, err := llama.Inspect(out)
	if err != nil {
		t.Fatal(err)
	}
	if pre := g.String("tokenizer.ggml.pre"); pre != "qwen2" {
		t.Fatalf("tokenizer.ggml.pre = %q, want qwen2", pre)
	}
	m, err := llama.LoadModel(out, llama.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var cfg struct {
		ChatTemplate string `json:"chat_template"`
	}
	json.Unmarshal(mustRead(t, filepath.Join(dir, "tokenizer_config.json")), &cfg)
	if cfg.ChatTemplate == "" || m.ChatTemplate() != cfg.ChatTemplate {
		t.Fatal("chat template not carried over")
	}
	if m.TokenText(m.EOS()) != "<|im_end|>" {
		t.Fatalf("EOS is %q", m.TokenText(m.EOS()))
	}
	inp := strings.Split(string(mustRead(t, shared(t, "tokenizers", "vocab-gguf", "ggml-vocab-qwen2.gguf.inp"))), "\n__ggml_vocab_test__\n")
	outs := strings.Split(string(mustRead(t, shared(t, "tokenizers", "vocab-gguf", "ggml-vocab-qwen2.gguf.out"))), "\n")
	n := 0
	for i, text := range inp {
		if i >= len(outs) || strings.TrimSpace(text) == "" && text == "" && i == len(inp)-1 {
			break
		}
		ids, err := m.Tokenize(text, false, false)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, id := range ids {
			got = append(got, strconv.Itoa(int(id)))
		}
		if want := strings.TrimSpace(outs[i]); strings.Join(got, " ") != want {
			t.Fatalf("tokenizing %q: got %v, want %s", text, got, want)
		}
		n++
	}
	if n < 40 {
		t.Fatalf("only %d tokenizer cases checked", n)
	}
	ctx, err := llama.NewContext(m, llama.ContextParams{NCtx: 128, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	prompt, err := m.ApplyChatTemplate("", []llama.Message{{Role: "user", Content: "Who are you?"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	toks, _ := m.Tokenize(prompt, true, true)
	res, err := ctx.Generate(context.Background(), toks, llama.GenerateOptions{MaxTokens: 8}, func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if res.Tokens == 0 {
		t.Fatal("generated nothing")
	}
}

// BF16 checkpoints stay BF16.
func TestConvertBF16(t *testing.T) {
	orig := testmodel.Cached(t, roundTripSpec("qwen3"))
	dir := t.TempDir()
	exportHF(t, orig, dir, 1<<30)
	// Rewrite the weights as BF16.
	st := filepath.Join(dir, "model.safetensors")
	_, ts := ggufTensors(t, orig)
	g, _ := llama.Inspect(orig)
	var es []stEntry
	want := map[string][]byte{}
	for _, ti := range g.Tensors {
		shape := make([]uint64, len(ti.Shape))
		for i, d := range ti.Shape {
			shape[len(shape)-1-i] = uint64(d)
		}
		data := ts[ti.Name]
		if ti.TypeName() == "f16" {
			bf := make([]byte, len(data))
			for i := 0; i < len(data); i += 2 {
				f := float16.Frombits(binary.LittleEndian.Uint16(data[i:])).Float32()
				binary.LittleEndian.PutUint16(bf[i:], uint16(math.Float32bits(f)>>16)) // exact: f16 fits bf16? not always; truncation is the reference
			}
			data = bf
			es = append(es, stEntry{hfName(ti.Name), "BF16", shape, data})
		} else {
			es = append(es, stEntry{hfName(ti.Name), "F32", shape, data})
		}
		want[ti.Name] = data
	}
	writeSafetensors(t, st, es)
	out := filepath.Join(t.TempDir(), "bf16.gguf")
	if _, err := convert.Model(context.Background(), dir, out, convert.Options{}); err != nil {
		t.Fatal(err)
	}
	cg, ct := ggufTensors(t, out)
	for _, ti := range cg.Tensors {
		if len(ti.Shape) == 2 && ti.TypeName() != "bf16" {
			t.Fatalf("%s is %s", ti.Name, ti.TypeName())
		}
		if string(ct[ti.Name]) != string(want[ti.Name]) {
			t.Fatalf("%s changed", ti.Name)
		}
	}
}

// peftAdapter writes a PEFT LoRA folder for the Hugging Face model in hfDir (random A
// and B on every projection) and returns, per Hugging Face weight name, its delta
// scale·B·A in F32 (rows = outputs).
func peftAdapter(t *testing.T, hfDir, dir string, r int, alpha float64, rslora bool, seed uint64) map[string][]float32 {
	t.Helper()
	var cfg struct {
		Hidden, Layers, FF, Heads, HeadsKV, HeadDim int
	}
	var raw map[string]any
	json.Unmarshal(mustRead(t, filepath.Join(hfDir, "config.json")), &raw)
	num := func(k string) int { v, _ := raw[k].(float64); return int(v) }
	cfg.Hidden, cfg.Layers, cfg.FF, cfg.Heads, cfg.HeadsKV, cfg.HeadDim = num("hidden_size"), num("num_hidden_layers"),
		num("intermediate_size"), num("num_attention_heads"), num("num_key_value_heads"), num("head_dim")
	if cfg.HeadDim == 0 {
		cfg.HeadDim = cfg.Hidden / cfg.Heads
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	scale := alpha / float64(r)
	if rslora {
		scale = alpha / math.Sqrt(float64(r))
	}
	deltas := map[string][]float32{}
	var es []stEntry
	f32bytes := func(v []float32) []byte {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return b
	}
	mods := []struct {
		name    string
		in, out int
	}{
		{"self_attn.q_proj", cfg.Hidden, cfg.Heads * cfg.HeadDim}, {"self_attn.k_proj", cfg.Hidden, cfg.HeadsKV * cfg.HeadDim},
		{"self_attn.v_proj", cfg.Hidden, cfg.HeadsKV * cfg.HeadDim}, {"self_attn.o_proj", cfg.Heads * cfg.HeadDim, cfg.Hidden},
		{"mlp.gate_proj", cfg.Hidden, cfg.FF}, {"mlp.up_proj", cfg.Hidden, cfg.FF}, {"mlp.down_proj", cfg.FF, cfg.Hidden},
	}
	for l := 0; l < cfg.Layers; l++ {
		for _, m := range mods {
			a := make([]float32, r*m.in)
			b := make([]float32, m.out*r)
			for i := range a {
				a[i] = float32(rng.NormFloat64() / math.Sqrt(float64(m.in)))
			}
			for i := range b {
				b[i] = float32(rng.NormFloat64() * 0.3 / math.Sqrt(float64(r)))
			}
			key := fmt.Sprintf("model.layers.%d.%s", l, m.name)
			es = append(es, stEntry{"base_model.model." + key + ".lora_A.weight", "F32", []uint64{uint64(r), uint64(m.in)}, f32bytes(a)},
				stEntry{"base_model.model." + key + ".lora_B.weight", "F32", []uint64{uint64(m.out), uint64(r)}, f32bytes(b)})
			d := make([]float32, m.out*m.in)
			for o := 0; o < m.out; o++ {
				for k := 0; k < r; k++ {
					c := float32(scale) * b[o*r+k]
					for i := 0; i < m.in; i++ {
						d[o*m.in+i] += c * a[k*m.in+i]
					}
				}
			}
			deltas[key+".weight"] = d
		}
	}
	writeSafetensors(t, filepath.Join(dir, "adapter_model.safetensors"), es)
	ac, _ := json.Marshal(map[string]any{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "use_rslora": rslora,
		"target_modules":          []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
		"base_model_name_or_path": "conch/tiny-test", "lora_dropout": 0.0, "bias": "none"})
	writeFile(t, filepath.Join(dir, "adapter_config.json"), ac)
	return deltas
}

// mergeHF writes a copy of the Hugging Face model in src with W + delta for every delta,
// in F32: the merge done by hand, in Hugging Face's own frame.
func mergeHF(t *testing.T, src, dst string, deltas map[string][]float32) {
	t.Helper()
	for _, f := range []string{"config.json", "tokenizer.json", "tokenizer_config.json"} {
		writeFile(t, filepath.Join(dst, f), mustRead(t, filepath.Join(src, f)))
	}
	b := mustRead(t, filepath.Join(src, "model.safetensors"))
	n := binary.LittleEndian.Uint64(b)
	var hdr map[string]json.RawMessage
	json.Unmarshal(b[8:8+n], &hdr)
	var es []stEntry
	for name, msg := range hdr {
		if name == "__metadata__" {
			continue
		}
		var m struct {
			DType   string   `json:"dtype"`
			Shape   []uint64 `json:"shape"`
			Offsets []int    `json:"data_offsets"`
		}
		json.Unmarshal(msg, &m)
		data := b[8+int(n)+m.Offsets[0] : 8+int(n)+m.Offsets[1]]
		d, ok := deltas[name]
		if !ok {
			es = append(es, stEntry{name, m.DType, m.Shape, data})
			continue
		}
		if m.DType != "F16" {
			t.Fatalf("%s is %s", name, m.DType)
		}
		out := make([]byte, 2*len(data))
		for i := range d {
			w := float16.Frombits(binary.LittleEndian.Uint16(data[2*i:])).Float32() + d[i]
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(w))
		}
		es = append(es, stEntry{name, "F32", m.Shape, out})
	}
	writeSafetensors(t, filepath.Join(dst, "model.safetensors"), es)
}

// A PEFT adapter converts into a llama.cpp LoRA that, applied at run time, gives the
// logits of the model merged by hand in Hugging Face's frame (then converted): this
// proves the tensor mapping, the A/B orientation, the scale and llama's q/k row order.
func TestConvertPEFTAdapter(t *testing.T) {
	for _, tc := range []struct {
		arch   string
		rslora bool
	}{{"llama", false}, {"qwen2", true}} {
		t.Run(tc.arch, func(t *testing.T) {
			hf, base := hfAndBase(t, tc.arch)
			tmp := t.TempDir()
			peft := filepath.Join(tmp, "lora")
			os.Mkdir(peft, 0o755)
			deltas := peftAdapter(t, hf, peft, 8, 16, tc.rslora, 11)
			ad := filepath.Join(tmp, "adapter.gguf")
			if _, err := convert.Adapter(context.Background(), peft, ad, base, convert.Options{}); err != nil {
				t.Fatal(err)
			}
			merged := filepath.Join(tmp, "merged-hf")
			os.Mkdir(merged, 0o755)
			mergeHF(t, hf, merged, deltas)
			mergedGGUF := filepath.Join(tmp, "merged.gguf")
			if _, err := convert.Model(context.Background(), merged, mergedGGUF, convert.Options{}); err != nil {
				t.Fatal(err)
			}
			ids := probeIDs(t, base)
			plain := logits(t, base, ids)
			runtime := logits(t, base, ids, ad)
			byHand := logits(t, mergedGGUF, ids)
			moved, _ := diff(runtime, plain)
			d, sc := diff(runtime, byHand)
			t.Logf("%s: adapter effect %.3f, runtime vs hand merge %.5f (logits up to %.2f)", tc.arch, moved, d, sc)
			// The hand-merged weights are rounded to F16 by the converter; nothing else differs.
			if d > 0.01*sc || moved < 20*d {
				t.Fatalf("converted adapter differs from the hand merge by %g (effect %g, logits up to %g)", d, moved, sc)
			}
		})
	}
}

// Each bad input gives one clear line, a non-zero result, and leaves nothing behind.
func TestConvertBadInput(t *testing.T) {
	good, base := hfAndBase(t, "qwen3")
	baseOut := filepath.Dir(base)
	variant := func(mut func(dir string)) string {
		d := t.TempDir()
		for _, f := range []string{"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"} {
			writeFile(t, filepath.Join(d, f), mustRead(t, filepath.Join(good, f)))
		}
		mut(d)
		return d
	}
	st := filepath.Join(good, "model.safetensors")
	stSize := len(mustRead(t, st))
	peft := t.TempDir()
	peftAdapter(t, good, peft, 4, 8, false, 1)
	_, otherBase := hfAndBase(t, "llama")
	bigQwen := testmodel.Tiny("qwen3")
	bigQwen.NEmbd, bigQwen.Name, bigQwen.Type = 64, "tiny-qwen3-64", "f16"
	otherQwen := testmodel.Cached(t, bigQwen)
	loraGGUF := filepath.Join(t.TempDir(), "lora.gguf")
	if err := testmodel.WriteAdapter(loraGGUF, base, testmodel.AdapterSpec{Rank: 2}); err != nil {
		t.Fatal(err)
	}
	dora := variant(func(string) {})
	peftAdapter(t, good, dora, 4, 8, false, 1)
	var dc map[string]any
	json.Unmarshal(mustRead(t, filepath.Join(dora, "adapter_config.json")), &dc)
	dc["use_dora"] = true
	b, _ := json.Marshal(dc)
	writeFile(t, filepath.Join(dora, "adapter_config.json"), b)

	cases := []struct {
		name, src, base string
		adapter         bool
		want            string
	}{
		{"missing folder", filepath.Join(good, "nope"), "", false, "no such folder"},
		{"a file", st, "", false, "is a file, not a Hugging Face model folder"},
		{"no config", t.TempDir(), "", false, "not a Hugging Face model folder (no config.json)"},
		{"adapter as model", peft, "", false, "is a PEFT adapter folder"},
		{"bad json", variant(func(d string) { writeFile(t, filepath.Join(d, "config.json"), []byte("{")) }), "", false, "invalid JSON"},
		{"no tokenizer", variant(func(d string) { os.Remove(filepath.Join(d, "tokenizer.json")) }), "", false, "no tokenizer.json"},
		{"truncated weights", variant(func(d string) {
			writeFile(t, filepath.Join(d, "model.safetensors"), mustRead(t, st)[:stSize-1000])
		}), "", false, "is truncated"},
		{"garbage weights", variant(func(d string) {
			writeFile(t, filepath.Join(d, "model.safetensors"), []byte("\xff\xff\xff\xff\xff\xff\xff\x7fgarbage"))
		}), "", false, "corrupt or truncated safetensors"},
		{"unsupported dtype", variant(func(d string) {
			writeSafetensors(t, filepath.Join(d, "model.safetensors"), []stEntry{{"model.norm.weight", "I8", []uint64{4}, []byte{1, 2, 3, 4}}})
		}), "", false, "dtype I8"},
		{"missing shard", variant(func(d string) {
			writeFile(t, filepath.Join(d, "model.safetensors.index.json"), []byte(`{"weight_map":{"a":"model-00002-of-00002.safetensors"}}`))
		}), "", false, "shard model-00002-of-00002.safetensors"},
		{"unknown architecture", variant(func(d string) {
			writeFile(t, filepath.Join(d, "config.json"), []byte(`{"architectures":["FancyNetForCausalLM"]}`))
		}), "", false, `unsupported architecture "FancyNetForCausalLM"`},
		{"peft without base", peft, "", true, "needs the base model"},
		{"peft for another model", peft, otherBase, true, "do not fit the base weight"},
		{"peft with other shapes", peft, otherQwen, true, "do not fit the base weight"},
		{"peft base is adapter", peft, loraGGUF, true, "is a LoRA adapter: --base must be the model"},
		{"peft base missing", peft, filepath.Join(baseOut, "nonesuch.gguf"), true, "no such file"},
		{"model as peft", good, base, true, "not a PEFT adapter folder"},
		{"dora", dora, base, true, "DoRA"},
	}
	outDir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(outDir, "out.gguf")
			var err error
			if c.adapter {
				_, err = convert.Adapter(context.Background(), c.src, out, c.base, convert.Options{})
			} else {
				_, err = convert.Model(context.Background(), c.src, out, convert.Options{})
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line with %q", err, c.want)
			}
			if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
				t.Fatalf("left behind: %v", ents)
			}
		})
	}
	// An existing output is kept unless forced.
	existing := filepath.Join(outDir, "exists.gguf")
	writeFile(t, existing, []byte("keep"))
	if _, err := convert.Model(context.Background(), good, existing, convert.Options{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("overwrote without force: %v", err)
	}
	if _, err := convert.Model(context.Background(), good, existing, convert.Options{Force: true}); err != nil {
		t.Fatal(err)
	}
}

// A full disk (a file size limit in a child process) removes the partial output.
func TestConvertDiskFull(t *testing.T) {
	if os.Getenv("CONCH_TEST_FSIZE") != "" {
		limit, _ := strconv.ParseUint(os.Getenv("CONCH_TEST_FSIZE"), 10, 64)
		syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit})
		_, err := convert.Model(context.Background(), os.Getenv("CONCH_TEST_SRC"), os.Getenv("CONCH_TEST_OUT"), convert.Options{})
		fmt.Printf("ERR: %v\n", err)
		os.Exit(0)
	}
	src := t.TempDir()
	exportHF(t, testmodel.Cached(t, roundTripSpec("qwen3")), src, 1<<30)
	outDir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestConvertDiskFull$")
	cmd.Env = append(os.Environ(), "CONCH_TEST_FSIZE=3000000", "CONCH_TEST_SRC="+src, "CONCH_TEST_OUT="+filepath.Join(outDir, "m.gguf"))
	b, _ := cmd.CombinedOutput()
	if !strings.Contains(string(b), "ERR: writing") || !strings.Contains(string(b), "file too large") {
		t.Fatalf("child said %q", b)
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}
