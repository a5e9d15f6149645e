package llama

import (
	"os"
	"strconv"
	"testing"
)

// BenchmarkTrainStep measures Accumulate + Step on one sequence of the model named by
// CONCH_TRAIN_BENCH_MODEL (skipped when unset), rank 8 on all targets. CONCH_TRAIN_BENCH_SEQ
// sets the sequence length (512), CONCH_TRAIN_BENCH_TYPE the compute type (f32) and
// CONCH_TRAIN_BENCH_THREADS the threads (all cores).
// Build the model with: go run ./internal/testmodel/mkmodel -shape qwen2.5-0.5b -type f16 -o /tmp/q05.gguf
func BenchmarkTrainStep(b *testing.B) {
	path := os.Getenv("CONCH_TRAIN_BENCH_MODEL")
	if path == "" {
		b.Skip("set CONCH_TRAIN_BENCH_MODEL to a GGUF base model")
	}
	seq := 512
	if s := os.Getenv("CONCH_TRAIN_BENCH_SEQ"); s != "" {
		seq, _ = strconv.Atoi(s)
	}
	m, err := LoadModel(path, ModelParams{VocabOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	threads, _ := strconv.Atoi(os.Getenv("CONCH_TRAIN_BENCH_THREADS"))
	p := TrainParams{Rank: 8, MaxSeqLen: seq, ComputeType: os.Getenv("CONCH_TRAIN_BENCH_TYPE"), Threads: threads}
	b.Logf("estimate %.2f GiB", float64(EstimateTrainMemory(m.Info, p))/(1<<30))
	tr, err := NewTrainer(m, p)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	b.Logf("trainer holds %.2f GiB", float64(tr.Memory())/(1<<30))
	tokens := trTokens(seq, m.VocabSize(), 1)
	labels := trLabels(tokens)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		loss, n, err := tr.Accumulate(tokens, labels)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tr.Step(1e-4, 0, 1); err != nil {
			b.Fatal(err)
		}
		b.Logf("step %d: loss %.4f", i, loss/float64(n))
	}
	b.ReportMetric(float64(seq*b.N)/b.Elapsed().Seconds(), "tokens/s")
}
