package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

// TestMain lets a test run the real command line (main, with its exit code) in a child.
func TestMain(m *testing.M) {
	if args := os.Getenv("CONCH_CLI_ARGS"); args != "" {
		os.Args = append([]string{"conch"}, strings.Split(args, "\x1f")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// conch runs the command line in a child process and returns its output and exit code.
func conch(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "CONCH_CLI_ARGS="+strings.Join(args, "\x1f"))
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// baseAndAdapter is a tiny llama model and a rank-4 adapter for it, in a fresh folder.
func baseAndAdapter(t *testing.T, seed uint64) (base, dir, adapter string) {
	t.Helper()
	base = testmodel.Cached(t, testmodel.Tiny("llama"))
	dir = t.TempDir()
	adapter = filepath.Join(dir, "adapter.gguf")
	if err := testmodel.WriteAdapter(adapter, base, testmodel.AdapterSpec{Rank: 4, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	return base, dir, adapter
}

func TestMergeQuantizeConvertCLI(t *testing.T) {
	base, dir, ad := baseAndAdapter(t, 1)
	merged := filepath.Join(dir, "merged-q8_0.gguf")
	out, code := conch(t, "merge", "-q", "--model", base, "--lora", ad+":0.5", "--output", merged, "--type", "q8_0")
	if code != 0 || !strings.Contains(out, "14 of 21 tensors merged and quantised, q8_0") {
		t.Fatalf("merge: exit %d: %s", code, out)
	}
	g, err := llama.Inspect(merged)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := g.Float("conch.merge.lora.0.scale"); v != 0.5 {
		t.Fatalf("recorded scale %v", v)
	}
	q := filepath.Join(dir, "q4.gguf")
	if out, code := conch(t, "quantize", merged, q, "Q4_K_M"); code != 0 || !strings.Contains(out, "q4_k_m") {
		t.Fatalf("quantize: exit %d: %s", code, out)
	}
	if out, code := conch(t, "quantize", "--list"); code != 0 || !strings.Contains(out, "q4_k_m") {
		t.Fatalf("quantize --list: exit %d: %s", code, out)
	}
	// Bad input: one line on stderr, exit status 1.
	for _, args := range [][]string{
		{"merge", "--model", base, "--lora", ad, "--output", merged},
		{"merge", "--model", base, "--lora", ad, "--output", filepath.Join(dir, "x.gguf"), "--type", "q7"},
		{"merge", "--model", ad, "--lora", ad, "--output", filepath.Join(dir, "x.gguf")},
		{"quantize", base, filepath.Join(dir, "x.gguf"), "nonsense"},
		{"convert", dir, filepath.Join(dir, "x.gguf")},
		{"convert", "--adapter", dir, filepath.Join(dir, "x.gguf"), "--base", base},
	} {
		out, code := conch(t, args...)
		if code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.HasPrefix(out, "conch: ") {
			t.Errorf("%v: exit %d, output %q (want one line and exit 1)", args, code, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.gguf")); err == nil {
		t.Fatal("a failed command left an output")
	}
}

// stories260K's ffn_down rows (172 values) fit no quantised block: quantize and merge
// still write q8_0, keep those tensors f16 and say so in one warning line on stderr.
func TestQuantizeFallbackCLI(t *testing.T) {
	base, err := testmodel.Stories260K()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	ad := filepath.Join(dir, "adapter.gguf")
	if err := testmodel.WriteAdapter(ad, base, testmodel.AdapterSpec{Rank: 4, Seed: 1, Scale: 0.1}); err != nil {
		t.Fatal(err)
	}
	q8, m8 := filepath.Join(dir, "q8.gguf"), filepath.Join(dir, "m8.gguf")
	for _, c := range []struct {
		out  string
		args []string
	}{
		{q8, []string{"quantize", base, q8, "q8_0"}},
		{m8, []string{"merge", "-q", "--model", base, "--lora", ad, "--output", m8, "--type", "q8_0"}},
	} {
		out, code := conch(t, c.args...)
		if code != 0 || strings.Count(out, "WARN") != 1 || !strings.Contains(out, "blk.0-4.ffn_down.weight as f16") || !strings.Contains(out, "q8_0") {
			t.Fatalf("%s: exit %d: %s", c.args[0], code, out)
		}
		t.Logf("%s: %s", c.args[0], out)
		g, err := llama.Inspect(c.out)
		if err != nil {
			t.Fatal(err)
		}
		if wt, _ := g.Tensor("blk.2.attn_q.weight"); wt.TypeName() != "q8_0" {
			t.Fatalf("%s: attn_q is %s", c.args[0], wt.TypeName())
		}
	}
}

// llama.cpp's K-quant quantiser cannot be interrupted: the first Ctrl-C asks to stop, a
// second one exits at once (status 130) and leaves no partial file behind.
func TestSecondInterruptQuitsAndCleansUp(t *testing.T) {
	// Big enough (about 50 MB) for the quantiser to run a few seconds on a small machine.
	base := testmodel.Cached(t, testmodel.Spec{Name: "cli-interrupt", Arch: "qwen2", NEmbd: 512, NLayer: 8, NHead: 8, NHeadKV: 2, NFF: 1536, Tied: true, Seed: 3})
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "CONCH_CLI_ARGS="+strings.Join([]string{"quantize", "-t", "1", base, filepath.Join(dir, "q.gguf"), "q4_k_m"}, "\x1f"))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the quantiser is writing its hidden temporary file.
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join(dir, ".q.gguf.*.partial"))
		if len(m) == 1 {
			if st, err := os.Stat(m[0]); err == nil && st.Size() > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no partial output appeared: %s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	time.Sleep(100 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 130 {
		t.Fatalf("exit %v, want status 130: %s", err, out.String())
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
	if !strings.Contains(out.String(), "partial output removed") {
		t.Fatalf("output: %s", out.String())
	}
}

// conch export reads LLaMA-Factory's export YAML; what it cannot honour is an error.
func TestExportConfigCLI(t *testing.T) {
	base, dir, ad := baseAndAdapter(t, 2)
	cfg := filepath.Join(dir, "merge.yaml")
	os.WriteFile(cfg, []byte("### model\nmodel_name_or_path: "+base+"\nadapter_name_or_path: "+ad+
		"\ntemplate: llama3\nfinetuning_type: lora\n\n### export\nexport_dir: "+filepath.Join(dir, "models", "conch_sft")+
		"\nexport_size: 5\nexport_device: cpu\nexport_legacy_format: false\nexport_quantization_bit: 8\n"), 0o644)
	out, code := conch(t, "export", "-q", "--config", cfg)
	if code != 0 {
		t.Fatalf("export: exit %d: %s", code, out)
	}
	g, err := llama.Inspect(filepath.Join(dir, "models", "conch_sft", "conch_sft-q8_0.gguf"))
	if err != nil {
		t.Fatalf("%v (output: %s)", err, out)
	}
	if wt, _ := g.Tensor("blk.0.attn_q.weight"); wt.TypeName() != "q8_0" {
		t.Fatalf("attn_q is %s", wt.TypeName())
	}
	// a flag wins over the file
	if out, code := conch(t, "export", "-q", "--config", cfg, "--type", "f16", "-o", filepath.Join(dir, "f16.gguf")); code != 0 || !strings.Contains(out, "f16") {
		t.Fatalf("export with flags: exit %d: %s", code, out)
	}
	for bad, want := range map[string]string{
		"export_quantization_bit: 3\n": "export_quantization_bit 3",
		"finetuning_type: full\n":      "only LoRA",
		"export_dri: x\n":              `unknown setting "export_dri"`,
	} {
		p := filepath.Join(dir, "bad.yaml")
		os.WriteFile(p, []byte("model_name_or_path: "+base+"\nadapter_name_or_path: "+ad+"\n"+bad), 0o644)
		if out, code := conch(t, "export", "--config", p, "-o", filepath.Join(dir, "bad.gguf")); code != 1 || !strings.Contains(out, want) {
			t.Errorf("%q: exit %d: %s", bad, code, out)
		}
	}
}
