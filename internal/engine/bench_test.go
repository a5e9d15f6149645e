package engine

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/magicconch/conch/llama"
)

// BenchmarkAggregate measures generated tokens per second with 1, 2, 4 and 8 concurrent
// requests on the engine alone (no HTTP), on the model named by CONCH_BENCH_MODEL:
//
//	CONCH_BENCH_MODEL=/tmp/q05-q8_0.gguf scripts/go test ./internal/engine -run '^$' -bench Aggregate -benchtime 1x
func BenchmarkAggregate(b *testing.B) {
	path := os.Getenv("CONCH_BENCH_MODEL")
	if path == "" {
		b.Skip("set CONCH_BENCH_MODEL to a GGUF model")
	}
	llama.SetLogLevel(4)
	m, err := llama.LoadModel(path, llama.ModelParams{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	e, err := New(Config{Model: m, Parallel: 8, SlotCtx: 1024, Threads: llama.DefaultThreads()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	const gen = 64
	for _, clients := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprint("clients=", clients), func(b *testing.B) {
			for range b.N {
				var wg sync.WaitGroup
				start := time.Now()
				for c := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						toks, _ := m.Tokenize(fmt.Sprintf("%d. Once upon a time, in a small village by the sea, there lived a young girl who loved shells.", c), true, true)
						s, err := e.Submit(context.Background(), Request{Prompt: toks, MaxTokens: gen, IgnoreEOS: true})
						if err != nil {
							b.Error(err)
							return
						}
						s.Wait(context.Background())
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(clients*gen)/time.Since(start).Seconds(), "tok/s")
			}
		})
	}
}
