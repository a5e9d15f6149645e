package llama_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

// checkClean fails t unless dir holds exactly the names in keep: no output, no temporary.
func checkClean(t *testing.T, dir string, keep ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		found := false
		for _, k := range keep {
			found = found || e.Name() == k
		}
		if !found {
			left = append(left, e.Name())
		}
	}
	if len(left) > 0 {
		t.Fatalf("left behind in %s: %v", dir, left)
	}
}

func copyFile(t *testing.T, src, dst string, n int64) {
	t.Helper()
	b := mustRead(t, src)
	if n >= 0 {
		b = b[:n]
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Each bad input gives one clear line and leaves nothing behind.
func TestMergeBadInput(t *testing.T) {
	base := testmodel.Cached(t, testmodel.Tiny("llama"))
	qwen := testmodel.Cached(t, testmodel.Tiny("qwen2"))
	other := testmodel.Cached(t, testmodel.Spec{Name: "tiny-llama-32", Arch: "llama", NEmbd: 32, NLayer: 2, NHead: 4, NFF: 64, Seed: 2})
	dir := t.TempDir()
	in := func(name string) string { return filepath.Join(dir, name) }
	good := in("good.gguf")
	if err := testmodel.WriteAdapter(good, base, testmodel.AdapterSpec{Rank: 4, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteAdapter(in("qwen-adapter.gguf"), qwen, testmodel.AdapterSpec{Rank: 4, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteAdapter(in("other-adapter.gguf"), other, testmodel.AdapterSpec{Rank: 4, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	copyFile(t, base, in("truncated-base.gguf"), 3<<20)
	st, _ := os.Stat(good)
	copyFile(t, good, in("truncated-adapter.gguf"), st.Size()-100)
	if err := os.WriteFile(in("garbage.gguf"), []byte("this is not a model at all, just text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in("existing.gguf"), []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	inputs := []string{"good.gguf", "qwen-adapter.gguf", "other-adapter.gguf", "truncated-base.gguf", "truncated-adapter.gguf", "garbage.gguf", "existing.gguf"}

	cases := []struct {
		name, base, lora, out, typ, want string
	}{
		{"architecture", base, in("qwen-adapter.gguf"), "", "f16", `adapter is for architecture "qwen2", the base model is "llama"`},
		{"shapes", base, in("other-adapter.gguf"), "", "f16", "do not fit the base weight"},
		{"truncated base", in("truncated-base.gguf"), good, "", "f16", "truncated"},
		{"truncated adapter", base, in("truncated-adapter.gguf"), "", "f16", "truncated"},
		{"corrupt adapter", base, in("garbage.gguf"), "", "f16", "not a GGUF file"},
		{"adapter as base", good, good, "", "f16", "is a LoRA adapter, not a model"},
		{"model as adapter", base, base, "", "f16", "not a LoRA adapter"},
		{"unknown type", base, good, "", "q9_x", `unknown output type "q9_x"`},
		{"existing output", base, good, in("existing.gguf"), "f16", "already exists (use --force"},
		{"output is the adapter", base, good, good, "f16", "is an input file"},
		{"missing base", in("nonesuch.gguf"), good, "", "f16", "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := c.out
			if out == "" {
				out = in("out.gguf")
			}
			_, err := llama.Merge(context.Background(), llama.MergeParams{Base: c.base, LoRAs: []llama.MergeLoRA{{Path: c.lora, Scale: 1}}, Output: out, Type: c.typ})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q, want one line with %q", err, c.want)
			}
			checkClean(t, dir, inputs...)
		})
	}
	if b := mustRead(t, in("existing.gguf")); string(b) != "keep me" {
		t.Fatal("an existing output was overwritten")
	}
	// --force replaces it.
	if _, err := llama.Merge(context.Background(), llama.MergeParams{Base: base, LoRAs: []llama.MergeLoRA{{Path: good, Scale: 1}},
		Output: in("existing.gguf"), Type: "f32", Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := llama.VerifyModel(in("existing.gguf")); err != nil {
		t.Fatal(err)
	}
	// A cancelled merge leaves nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := llama.Merge(ctx, llama.MergeParams{Base: base, LoRAs: []llama.MergeLoRA{{Path: good, Scale: 1}}, Output: in("c.gguf")}); err == nil {
		t.Fatal("cancelled merge succeeded")
	}
	checkClean(t, dir, inputs...)
}

// A full disk (simulated with a file size limit in a child process) fails with a clear
// line and removes the partial output, in the merge and in the quantiser.
func TestMergeDiskFull(t *testing.T) {
	if os.Getenv("CONCH_TEST_FSIZE") != "" {
		diskFullChild()
		return
	}
	base := testmodel.Cached(t, testmodel.Tiny("llama"))
	dir := t.TempDir()
	ad := filepath.Join(dir, "a.gguf")
	if err := testmodel.WriteAdapter(ad, base, testmodel.AdapterSpec{Rank: 4, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"merge", "quantize"} {
		out := filepath.Join(dir, op+".gguf")
		cmd := exec.Command(os.Args[0], "-test.run=^TestMergeDiskFull$")
		cmd.Env = append(os.Environ(), "CONCH_TEST_FSIZE=2000000", "CONCH_TEST_OP="+op, "CONCH_TEST_BASE="+base,
			"CONCH_TEST_LORA="+ad, "CONCH_TEST_OUT="+out)
		b, _ := cmd.CombinedOutput()
		got := string(b)
		if !strings.Contains(got, "ERR: ") || !strings.Contains(got, "file too large") && !strings.Contains(got, "size limit") {
			t.Fatalf("%s: child said %q", op, got)
		}
		t.Logf("%s: %s", op, strings.TrimSpace(strings.SplitN(got[strings.Index(got, "ERR: "):], "\n", 2)[0]))
		checkClean(t, dir, "a.gguf")
	}
}

func diskFullChild() {
	limit, _ := strconv.ParseUint(os.Getenv("CONCH_TEST_FSIZE"), 10, 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(2)
	}
	var err error
	if os.Getenv("CONCH_TEST_OP") == "merge" {
		_, err = llama.Merge(context.Background(), llama.MergeParams{Base: os.Getenv("CONCH_TEST_BASE"),
			LoRAs: []llama.MergeLoRA{{Path: os.Getenv("CONCH_TEST_LORA"), Scale: 1}}, Output: os.Getenv("CONCH_TEST_OUT"), Type: "f32"})
	} else {
		_, err = llama.Quantize(context.Background(), llama.QuantizeParams{Input: os.Getenv("CONCH_TEST_BASE"),
			Output: os.Getenv("CONCH_TEST_OUT"), Type: "f16"})
	}
	fmt.Printf("ERR: %v\n", err)
	os.Exit(0)
}

// Quantize: types by llama.cpp's names, every key kept, clear errors.
func TestQuantize(t *testing.T) {
	base := testmodel.Cached(t, testmodel.Tiny("qwen2"))
	dir := t.TempDir()
	out := filepath.Join(dir, "q8.gguf")
	res, err := llama.Quantize(context.Background(), llama.QuantizeParams{Input: base, Output: out, Type: "Q8_0"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Type.Name != "q8_0" || res.Size <= 0 {
		t.Fatalf("result %+v", res)
	}
	g, err := llama.Inspect(out)
	if err != nil {
		t.Fatal(err)
	}
	if wt, _ := g.Tensor("blk.1.ffn_up.weight"); wt.TypeName() != "q8_0" {
		t.Fatalf("ffn_up is %s", wt.TypeName())
	}
	if ft, _ := g.Uint("general.file_type"); ft != 7 {
		t.Fatalf("general.file_type %d, want 7 (MOSTLY_Q8_0)", ft)
	}
	bkv, _ := rawGGUF(t, base)
	okv, _ := rawGGUF(t, out)
	for k, v := range bkv {
		if k != "general.file_type" && string(okv[k]) != string(v) {
			t.Errorf("key %s changed or lost", k)
		}
	}
	// Random tiny models amplify rounding: real ones stay far closer.
	d, sc := logitsDiff(mergeLogits(t, out), mergeLogits(t, base))
	if d > 0.1*sc {
		t.Fatalf("q8_0 logits off by %g of %g", d, sc)
	}

	for _, c := range []struct{ in, typ, want string }{
		{base, "q9_k", `unknown output type "q9_k"`},
		{filepath.Join(dir, "nonesuch.gguf"), "q8_0", "no such file"},
		{out, "f16", "is an input file"},
	} {
		o := filepath.Join(dir, "x.gguf")
		if c.typ == "f16" {
			o = out
		}
		_, err := llama.Quantize(context.Background(), llama.QuantizeParams{Input: c.in, Output: o, Type: c.typ, Force: true})
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%s to %s: error %v, want %q", c.in, c.typ, err, c.want)
		}
	}
	checkClean(t, dir, "q8.gguf")
}
