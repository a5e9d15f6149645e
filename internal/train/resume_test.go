package train

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

// N steps straight give exactly the same log as N/2 steps, a Ctrl-C, and a resume; and
// as a crash after a periodic checkpoint (the log written past it is dropped).
func TestResumeBitExact(t *testing.T) {
	model := testmodel.Cached(t, testmodel.Tiny("qwen2"))
	cfg := testConfig(t, model)
	cfg.MaxSteps = 6
	cfg.BatchSize, cfg.GradAccum = 1, 2
	cfg.LearningRate = 5e-3
	cfg.WarmupSteps = 1
	cfg.ValSize = 2
	cfg.EvalSteps = 2
	cfg.MaxSamples = 12 // 10 training samples, 5 steps an epoch: the resumed part crosses into epoch 1

	straight, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}

	// Ctrl-C after step 3: the step finishes, a checkpoint is written, the error says how
	// to resume.
	stopped := cfg
	stopped.OutputDir = filepath.Join(t.TempDir(), "stopped")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelAt{match: "step 3/6 ", cancel: cancel}
	res, err := Run(ctx, stopped, w)
	if !errors.Is(err, ErrInterrupted) || !strings.Contains(err.Error(), "--resume") || res.Steps != 3 {
		t.Fatalf("interrupted run: %v (%d steps)\n%s", err, res.Steps, w.buf.String())
	}
	ckpt := filepath.Join(stopped.OutputDir, checkpointsDir, "step-3")
	checkAdapterLoads(t, model, filepath.Join(ckpt, adapterFile))
	if _, err := os.Stat(filepath.Join(stopped.OutputDir, adapterFile)); err == nil {
		t.Error("an interrupted run wrote the final adapter")
	}
	stopped.Resume = true
	resumed, err := Run(context.Background(), stopped, nil)
	if err != nil {
		t.Fatal(err)
	}
	sameCurve(t, "ctrl-c + resume", straight.Log, resumed.Log)
	sameCurve(t, "ctrl-c + resume (file)", straight.Log, readLog(t, stopped.OutputDir))

	// A crash: checkpoints every 2 steps, killed after step 3 was logged (its checkpoint
	// removed as if never written).
	crashed := cfg
	crashed.OutputDir = filepath.Join(t.TempDir(), "crashed")
	crashed.SaveSteps = 2
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if _, err := Run(ctx2, crashed, &cancelAt{match: "step 3/6 ", cancel: cancel2}); !errors.Is(err, ErrInterrupted) {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(crashed.OutputDir, checkpointsDir, "step-3"))
	os.MkdirAll(filepath.Join(crashed.OutputDir, checkpointsDir, "step-5.tmp"), 0o755) // a save cut short
	if n := len(readLog(t, crashed.OutputDir)); n != 3 {
		t.Fatalf("log before the crash has %d lines", n)
	}
	crashed.Resume = true
	resumed, err = Run(context.Background(), crashed, nil)
	if err != nil {
		t.Fatal(err)
	}
	sameCurve(t, "crash + resume", straight.Log, readLog(t, crashed.OutputDir))

	// A resumed run refuses settings that would change what each step sees.
	changed := crashed
	changed.BatchSize = 3
	if _, err := Run(context.Background(), changed, nil); err == nil || !strings.Contains(err.Error(), "per_device_train_batch_size") {
		t.Errorf("resume with another batch size: %v", err)
	}
}

// sameCurve compares everything but timings, bit for bit.
func sameCurve(t *testing.T, what string, want, got []LogEntry) {
	t.Helper()
	strip := func(log []LogEntry) []LogEntry {
		out := make([]LogEntry, len(log))
		for i, e := range log {
			e.TokensPerS, e.Elapsed = 0, 0
			out[i] = e
		}
		return out
	}
	if !reflect.DeepEqual(strip(want), strip(got)) {
		for i := range max(len(want), len(got)) {
			var a, b any
			if i < len(want) {
				a = want[i]
			}
			if i < len(got) {
				b = got[i]
			}
			t.Logf("%d: want %+v\n    got  %+v", i, a, b)
		}
		t.Fatalf("%s: the loss curve differs from the straight run", what)
	}
}

func checkAdapterLoads(t *testing.T, model, adapter string) {
	t.Helper()
	m, err := llama.LoadModel(model, llama.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, err := llama.LoadAdapter(m, adapter)
	if err != nil {
		t.Fatalf("checkpoint adapter: %v", err)
	}
	a.Close()
}
