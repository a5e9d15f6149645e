// Command mkmodel writes a random-weight GGUF model (and optionally a random LoRA adapter
// for it) with a real architecture and tokenizer, for benchmarks and manual tests:
//
//	go run ./internal/testmodel/mkmodel -shape qwen2.5-0.5b -type f16 -o /tmp/q05.gguf
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

var shapes = map[string]func() testmodel.Spec{
	"qwen2.5-0.5b": testmodel.Qwen25_05B,
	"r1-qwen-1.5b": testmodel.DeepSeekR1Qwen15B,
	"tiny-llama":   func() testmodel.Spec { return testmodel.Tiny("llama") },
	"tiny-qwen2":   func() testmodel.Spec { return testmodel.Tiny("qwen2") },
	"tiny-qwen3":   func() testmodel.Spec { return testmodel.Tiny("qwen3") },
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mkmodel:", err)
		os.Exit(1)
	}
}

func run() error {
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	shape := flag.String("shape", "tiny-qwen2", "model shape: "+strings.Join(names, ", "))
	typ := flag.String("type", "f32", "weight type: f32, f16, or any llama.cpp quantisation ("+strings.Join(llama.QuantTypeNames(), ", ")+")")
	out := flag.String("o", "", "output GGUF path (required)")
	seed := flag.Uint64("seed", 1, "random seed (same seed, same bytes)")
	ctx := flag.Int("ctx", 0, "override the training context length written to the file")
	adapter := flag.String("adapter", "", "also write a random LoRA adapter for the model to this path")
	rank := flag.Int("rank", 8, "LoRA rank for -adapter")
	flag.Parse()

	mk, ok := shapes[*shape]
	if !ok {
		return fmt.Errorf("unknown -shape %q (want one of %s)", *shape, strings.Join(names, ", "))
	}
	if *out == "" {
		return fmt.Errorf("-o is required")
	}
	spec := mk()
	spec.Seed = *seed
	if *ctx > 0 {
		spec.NCtx = *ctx
	}
	start := time.Now()
	switch *typ {
	case "f32", "f16":
		spec.Type = *typ
		if err := testmodel.Write(*out, spec); err != nil {
			return err
		}
	default:
		if err := writeQuantized(*out, *typ, spec); err != nil {
			return err
		}
	}
	st, err := os.Stat(*out)
	if err != nil {
		return err
	}
	slog.Info("wrote model", "path", *out, "shape", *shape, "type", *typ, "bytes", st.Size(), "took", time.Since(start).Round(time.Millisecond))
	if *adapter != "" {
		if err := testmodel.WriteAdapter(*adapter, *out, testmodel.AdapterSpec{Rank: *rank, Seed: *seed}); err != nil {
			return err
		}
		slog.Info("wrote adapter", "path", *adapter, "rank", *rank)
	}
	return nil
}

// writeQuantized writes an f16 model beside out and quantises it with llama.cpp (the
// usual route: quantising from f16 rather than f32 halves the temporary file).
func writeQuantized(out, typ string, spec testmodel.Spec) error {
	if _, err := llama.ParseQuantType(typ); err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".f16.tmp")
	defer os.Remove(tmp)
	spec.Type = "f16"
	if err := testmodel.Write(tmp, spec); err != nil {
		return err
	}
	llama.SetLogLevel(3)
	_, err := llama.Quantize(context.Background(), llama.QuantizeParams{Input: tmp, Output: out, Type: typ, Force: true})
	return err
}
