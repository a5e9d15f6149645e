package train

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

// Every refusal happens before any weight is loaded, with a message that says what to fix.
func TestRefusals(t *testing.T) {
	qwen := testmodel.Cached(t, testmodel.Tiny("qwen2"))

	badData := t.TempDir()
	writeFile(t, filepath.Join(badData, "dataset_info.json"), `{"broken": {"file_name": "broken.json"}}`)
	writeFile(t, filepath.Join(badData, "broken.json"), `[
  {"instruction": "hi", "input": "", "output": "hello"},
  {"instruction": "no answer here", "input": ""}
]`)

	cases := []struct {
		name  string
		edit  func(c *Config)
		wants []string
	}{
		{"stage", func(c *Config) { c.Stage = "rm" }, []string{`stage "rm"`}},
		{"finetuning type", func(c *Config) { c.FinetuningType = "full" }, []string{`finetuning_type "full"`}},
		{"bad dataset record", func(c *Config) { c.DatasetDir, c.Dataset = badData, "broken" }, []string{"broken.json", "line 3", `missing "output"`}},
		{"unknown dataset", func(c *Config) { c.Dataset = "no_such_set" }, []string{"no_such_set"}},
		{"unknown template", func(c *Config) { c.Template = "no_such_template" }, []string{"unknown template", "no_such_template"}},
		{"template the model lacks", func(c *Config) { c.Template = "llama3" }, []string{"template llama3", "<|eot_id|>", "lacks"}},
		{"untrainable arch", func(c *Config) { c.Model = retypeArch(t, qwen, "gemma") }, []string{`architecture "gemma"`}},
		{"adapter as model", func(c *Config) { c.Model = randomAdapter(t, qwen) }, []string{"LoRA adapter"}},
		{"missing model", func(c *Config) { c.Model = filepath.Join(t.TempDir(), "none.gguf") }, []string{"none.gguf"}},
		{"lm_head on a tied head", func(c *Config) { c.LoraTarget = "all,lm_head" }, []string{"lm_head", "token_embd.weight"}},
	}
	if llama.GPUCount() == 0 {
		cases = append(cases, struct {
			name  string
			edit  func(c *Config)
			wants []string
		}{"gpu layers without a GPU", func(c *Config) { c.GPULayers = 4 }, []string{"gpu_layers 4", "sees none"}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(t, qwen)
			tc.edit(&c)
			_, err := Run(context.Background(), c, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, err := os.Stat(c.OutputDir); err == nil {
				t.Errorf("a refused run created %s", c.OutputDir)
			}
		})
	}

	t.Run("memory estimate", func(t *testing.T) {
		defer func(f func() (uint64, error)) { availableMemory = f }(availableMemory)
		availableMemory = func() (uint64, error) { return 64 << 10, nil }
		var buf bytes.Buffer
		_, err := Run(context.Background(), testConfig(t, qwen), &buf)
		if err == nil || !strings.Contains(err.Error(), "training needs about") || !strings.Contains(err.Error(), "has only 64.0 KiB available") {
			t.Fatalf("error %v", err)
		}
	})

	t.Run("output already used", func(t *testing.T) {
		c := testConfig(t, qwen)
		os.MkdirAll(c.OutputDir, 0o755)
		writeFile(t, filepath.Join(c.OutputDir, logFile), "")
		if _, err := Run(context.Background(), c, nil); err == nil || !strings.Contains(err.Error(), "--resume") {
			t.Fatalf("error %v", err)
		}
		c.Resume = true
		if _, err := Run(context.Background(), c, nil); err == nil || !strings.Contains(err.Error(), "no checkpoint") {
			t.Fatalf("resume without a checkpoint: error %v", err)
		}
	})

	t.Run("cancelled before the first step", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Run(ctx, testConfig(t, qwen), nil)
		if !errors.Is(err, ErrInterrupted) {
			t.Fatalf("error %v", err)
		}
	})
}

// retypeArch copies a GGUF model with general.architecture replaced by another name of
// the same length.
func retypeArch(t *testing.T, path, arch string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("general.architecture")
	i := bytes.Index(b, key)
	if i < 0 {
		t.Fatal("no general.architecture")
	}
	v := i + len(key) + 4 // value type
	n := int(binary.LittleEndian.Uint64(b[v:]))
	if n != len(arch) {
		t.Fatalf("arch name length %d, want %d", n, len(arch))
	}
	copy(b[v+8:], arch)
	out := filepath.Join(t.TempDir(), arch+".gguf")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func randomAdapter(t *testing.T, base string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "adapter.gguf")
	if err := testmodel.WriteAdapter(p, base, testmodel.AdapterSpec{Rank: 2}); err != nil {
		t.Fatal(err)
	}
	return p
}
