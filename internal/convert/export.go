package convert

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/magicconch/conch/internal/outfile"
	"github.com/magicconch/conch/llama"
)

// ExportParams say what Export merges, and into what.
type ExportParams struct {
	Model    string    // base: a GGUF file or a Hugging Face folder
	Adapters []string  // LoRA adapters: GGUF files or PEFT folders (as LLaMA-Factory saves them)
	Scales   []float32 // per adapter; missing ones are 1
	Output   string    // a .gguf file, or a folder that receives <folder name>-<type>.gguf
	Type     string    // output type (llama.cpp's names); "" is f16
	Threads  int
	Force    bool
	Progress func(done, total int)
}

// ExportResult is Merge's result, with the conversions Export ran first.
type ExportResult struct {
	*llama.MergeResult
	Converted []string // inputs that were Hugging Face or PEFT folders
}

// Export is LLaMA-Factory's export in one step: Hugging Face and PEFT folders are
// converted to GGUF first (into hidden files beside the output, removed afterwards),
// then the adapters are merged into the base and written as one model.
func Export(ctx context.Context, p ExportParams) (_ *ExportResult, err error) {
	if p.Model == "" || len(p.Adapters) == 0 || p.Output == "" {
		return nil, errors.New("export needs a model, at least one adapter and an output")
	}
	if p.Type == "" {
		p.Type = "f16"
	}
	out, made, err := exportPath(p.Output, p.Type)
	if err != nil {
		return nil, err
	}
	if made != "" {
		// A failed export leaves no empty folder behind (os.Remove keeps a non-empty one).
		defer func() {
			if err != nil {
				os.Remove(made)
			}
		}()
	}
	res := &ExportResult{}
	// scratch names a hidden file beside the output for a converted input.
	var scratch []string
	defer func() {
		for _, s := range scratch {
			outfile.Remove(s)
		}
	}()
	convertDir := func(dir, tag string, conv func(tmp string) error) (string, error) {
		tmp, err := outfile.Scratch(out, tag)
		if err != nil {
			return "", err
		}
		scratch = append(scratch, tmp)
		if err := conv(tmp); err != nil {
			return "", fmt.Errorf("%s: %w", dir, err)
		}
		res.Converted = append(res.Converted, dir)
		return tmp, nil
	}
	base := p.Model
	if isDir(base) {
		if base, err = convertDir(p.Model, "base.gguf", func(tmp string) error {
			_, err := Model(ctx, p.Model, tmp, Options{Force: true})
			return err
		}); err != nil {
			return nil, err
		}
	}
	mp := llama.MergeParams{Base: base, Output: out, Type: p.Type, Threads: p.Threads, Force: p.Force, Progress: p.Progress}
	for i, a := range p.Adapters {
		path := a
		if isDir(a) {
			if path, err = convertDir(a, fmt.Sprintf("adapter%d.gguf", i), func(tmp string) error {
				_, err := Adapter(ctx, a, tmp, base, Options{Force: true})
				return err
			}); err != nil {
				return nil, err
			}
		}
		scale := float32(1)
		if i < len(p.Scales) {
			scale = p.Scales[i]
		}
		mp.LoRAs = append(mp.LoRAs, llama.MergeLoRA{Path: path, Scale: scale})
	}
	if res.MergeResult, err = llama.Merge(ctx, mp); err != nil {
		return nil, err
	}
	return res, nil
}

// exportPath is the output file: Output itself when it names a .gguf file, else a file
// in that folder (created if needed) named after it and the type. made is the folder when
// this call created it.
func exportPath(output, typ string) (path, made string, err error) {
	if strings.EqualFold(filepath.Ext(output), ".gguf") {
		return output, "", nil
	}
	abs, err := filepath.Abs(output)
	if err != nil {
		return "", "", err
	}
	if _, err := os.Stat(abs); os.IsNotExist(err) {
		made = abs
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", "", fmt.Errorf("export folder: %w", outfile.Unwrap(err))
	}
	return filepath.Join(output, filepath.Base(abs)+"-"+strings.ToLower(typ)+".gguf"), made, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
