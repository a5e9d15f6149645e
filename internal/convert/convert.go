// Package convert brings Hugging Face models and PEFT LoRA adapters into GGUF.
//
// Models (config.json, tokenizer.json or tokenizer.model, single or sharded safetensors in
// F32, F16 or BF16) go through ollama's converter (github.com/ollama/ollama/convert), which
// knows the tensor layouts and tokenizers; we add what the pinned version lacks (dense
// Qwen3), check the inputs first (a truncated download fails with one line, before any
// writing) and write the result atomically after llama.cpp has loaded it.
//
// PEFT adapters (adapter_config.json + adapter_model.safetensors, as PEFT and
// LLaMA-Factory save them) are converted here, against the base GGUF they will be used
// with: ollama's adapter converter covers only llama and gemma2.
package convert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	oconvert "github.com/ollama/ollama/convert"

	"github.com/magicconch/conch/internal/outfile"
	"github.com/magicconch/conch/llama"
)

// Options are shared by Model and Adapter.
type Options struct {
	Force bool // replace an existing output
}

// Result describes a written GGUF.
type Result struct {
	Output   string
	Arch     string // llama.cpp architecture
	Tensors  int
	Size     int64
	Duration time.Duration
}

// Architectures converted here (and covered by our tests); ollama's converter knows more,
// which are attempted and then checked by loading them with llama.cpp.
var tested = map[string]string{"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}

// Model converts the Hugging Face model folder dir into the GGUF file out.
func Model(ctx context.Context, dir, out string, opt Options) (*Result, error) {
	start := time.Now()
	cfg, arch, err := readModelFolder(dir)
	if err != nil {
		return nil, err
	}
	weights, err := scanWeights(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if len(weights) == 0 {
		return nil, fmt.Errorf("%s: no *.safetensors weights in the folder", dir)
	}
	var need int64
	for _, w := range weights {
		need += w.Size
	}
	err = writeOutput(ctx, out, opt.Force, need, func(f *os.File) error {
		return guard(func() error {
			if arch == "Qwen3ForCausalLM" {
				return writeQwen3(dir, cfg, weights, f)
			}
			return oconvert.ConvertModel(os.DirFS(dir), f)
		})
	}, llama.VerifyModel)
	if err != nil {
		return nil, err
	}
	if _, ok := tested[arch]; !ok {
		slog.Warn("converted by ollama's converter, but conch's tests do not cover this architecture", "architecture", arch)
	}
	return result(out, start)
}

// readModelFolder checks that dir looks like a Hugging Face model and returns its
// config.json and first architecture.
func readModelFolder(dir string) ([]byte, string, error) {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, "", fmt.Errorf("%s: no such folder", dir)
	case err != nil:
		return nil, "", err
	case !st.IsDir():
		return nil, "", fmt.Errorf("%s is a file, not a Hugging Face model folder", dir)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		if _, aerr := os.Stat(filepath.Join(dir, "adapter_config.json")); aerr == nil {
			return nil, "", fmt.Errorf("%s is a PEFT adapter folder, not a model: convert it with --adapter and --base", dir)
		}
		return nil, "", fmt.Errorf("%s is not a Hugging Face model folder (no config.json)", dir)
	}
	var c struct {
		Architectures []string `json:"architectures"`
	}
	if err := json.Unmarshal(cfg, &c); err != nil {
		return nil, "", fmt.Errorf("%s/config.json: invalid JSON: %v", dir, err)
	}
	if len(c.Architectures) == 0 {
		return nil, "", fmt.Errorf("%s/config.json names no architecture", dir)
	}
	_, e1 := os.Stat(filepath.Join(dir, "tokenizer.json"))
	_, e2 := os.Stat(filepath.Join(dir, "tokenizer.model"))
	if e1 != nil && e2 != nil {
		return nil, "", fmt.Errorf("%s: no tokenizer.json or tokenizer.model in the folder", dir)
	}
	return cfg, c.Architectures[0], nil
}

// guard turns a panic in the converter (it panics on some unexpected configs) into an error.
func guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the converter failed: %v", r)
		}
	}()
	return f()
}

// writeOutput writes out through a temporary file beside it: write fills the file,
// verify checks the finished file, and only then is it moved into place. On any error
// the temporary file is removed.
func writeOutput(ctx context.Context, out string, force bool, need int64, write func(*os.File) error, verify func(string) error) error {
	pf, err := outfile.Create(out, force, need)
	if err != nil {
		return err
	}
	defer pf.Abort()
	f, err := os.OpenFile(pf.Tmp, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("cannot write to %s: %w", pf.Dir, outfile.Unwrap(err))
	}
	failed := func(err error) error {
		return fmt.Errorf("writing %s failed: %v (the partial output was removed)", out, outfile.Unwrap(err))
	}
	if err := write(f); err != nil {
		f.Close()
		if outfile.IsDiskFull(err) {
			return failed(err)
		}
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return failed(err)
	}
	if err := f.Close(); err != nil {
		return failed(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := verify(pf.Tmp); err != nil {
		return fmt.Errorf("the converted file does not load: %w", err)
	}
	_, err = pf.Commit()
	return err
}

func result(out string, start time.Time) (*Result, error) {
	g, err := llama.Inspect(out)
	if err != nil {
		return nil, err
	}
	return &Result{Output: out, Arch: g.Arch(), Tensors: len(g.Tensors), Size: g.FileSize, Duration: time.Since(start)}, nil
}
