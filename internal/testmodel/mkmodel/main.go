// Command mkmodel writes a random-weight GGUF model (and optionally a random LoRA adapter
// for it) with a real architecture and tokenizer, for benchmarks and manual tests:
//
//	go run ./internal/testmodel/mkmodel -shape qwen2.5-0.5b -type f16 -o /tmp/q05.gguf
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/magicconch/conch/internal/testmodel"
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
	typ := flag.String("type", "f32", "matrix type: f32 or f16 (quantise afterwards with conch quantize)")
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
	switch *typ {
	case "f32", "f16":
	default:
		return fmt.Errorf("-type %q: mkmodel writes f32 or f16; quantise the result with `conch quantize`", *typ)
	}
	spec := mk()
	spec.Type = *typ
	spec.Seed = *seed
	if *ctx > 0 {
		spec.NCtx = *ctx
	}
	start := time.Now()
	if err := testmodel.Write(*out, spec); err != nil {
		return err
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
