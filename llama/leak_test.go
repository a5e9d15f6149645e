package llama

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
)

func rssBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skip("no /proc/self/statm")
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// Load, use and close a model, a context, a sampler and a batch many times: resident
// memory must not grow with the number of cycles.
func TestNoLeakAcrossLoadClose(t *testing.T) {
	path := testmodel.Cached(t, testmodel.Tiny("qwen2")) // 25 MB of weights
	cycle := func() {
		m, err := LoadModel(path, ModelParams{NoMmap: true})
		if err != nil {
			t.Fatal(err)
		}
		ctx, err := NewContext(m, ContextParams{NCtx: 256, NSeq: 2})
		if err != nil {
			t.Fatal(err)
		}
		toks, _ := m.Tokenize("请问你是谁? Once upon a time", true, false)
		b := NewBatch(32)
		for i, tk := range toks {
			b.Add(tk, i, 0, i == len(toks)-1)
		}
		if err := ctx.Decode(b); err != nil {
			t.Fatal(err)
		}
		s, _ := NewSampler(SamplerParams{Temperature: 1, Seed: 1})
		s.Sample(ctx, len(toks)-1)
		s.Close()
		b.Free()
		ctx.Close()
		m.Close()
	}
	measure := func(n int) int64 {
		for i := 0; i < n; i++ {
			cycle()
		}
		debug.FreeOSMemory()
		return rssBytes(t)
	}
	n := 12
	if s := os.Getenv("CONCH_LEAK_CYCLES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	// The heap settles over the first cycles: llama.cpp and ggml keep per-process state,
	// and ollama's ggml never deletes the struct of a zero-size backend buffer
	// (ggml_backend_buffer_free lacks the delete; ~100 bytes per weight per load), which
	// fragments the heap. Compare two later rounds of cycles instead.
	warm := measure(8)
	before := measure(n)
	after := measure(n)
	// Each cycle reads 25 MB of weights into memory and allocates a KV cache and compute
	// buffers: leaking any of them would add 25+ MB per cycle. Allow a fifth of that.
	// Fragmentation can still be settling in the first rounds (RSS levels off near
	// 195 MB, sometimes only after 30 cycles, 3-5 MB a cycle until then), while a leak
	// grows round after round: only growth in two rounds running fails.
	const limit = 5 << 20
	if (after-before)/int64(n) > limit {
		third := measure(n)
		if perCycle := (third - after) / int64(n); perCycle > limit {
			t.Fatalf("RSS grew by %d KB per load/close cycle over two rounds of %d cycles (%d → %d → %d → %d MB)", perCycle>>10, n, warm>>20, before>>20, after>>20, third>>20)
		}
		before, after = after, third
	}
	t.Logf("RSS %d → %d → %d MB over rounds of %d cycles", warm>>20, before>>20, after>>20, n)
}
