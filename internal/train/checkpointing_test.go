package train

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
)

// gradient_checkpointing: auto turns it on only when training would not fit otherwise,
// says so, and trains; false refuses with the way out; when even checkpointing does not
// fit, the error gives the smaller figure.
func TestCheckpointingWhenMemoryIsShort(t *testing.T) {
	stories, err := testmodel.Stories260K()
	if err != nil {
		t.Fatal(err)
	}
	base := testConfig(t, stories)
	base.Template = "empty"
	base.MaxSteps = 2
	estimate := func(mode string) uint64 {
		c := base
		c.GradientCheckpointing = mode
		j, err := prepare(c, newProgress(nil))
		if err != nil {
			t.Fatal(err)
		}
		j.vocab.Close()
		return j.estimate
	}
	full, ck := estimate("false"), estimate("true")
	t.Logf("estimate %s without checkpointing, %s with", fmtBytes(full), fmtBytes(ck))
	if ck >= full*3/4 {
		t.Fatalf("checkpointing saves too little: %d vs %d bytes", ck, full)
	}

	defer func(f func() (uint64, error)) { availableMemory = f }(availableMemory)
	room := (full + ck) / 2
	availableMemory = func() (uint64, error) { return room, nil }

	c := base
	var out bytes.Buffer
	if _, err := Run(context.Background(), c, &out); err != nil {
		t.Fatalf("auto: %v\n%s", err, out.String())
	}
	for _, want := range []string{"gradient checkpointing on: training would need about " + fmtBytes(full), "memory estimate " + fmtBytes(ck), ", gradient checkpointing\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("auto: output lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(c.OutputDir, "adapter.gguf")); err != nil {
		t.Error(err)
	}

	c = base
	c.GradientCheckpointing = "false"
	c.OutputDir = filepath.Join(t.TempDir(), "off")
	if _, err := Run(context.Background(), c, nil); err == nil || !strings.Contains(err.Error(), "turn gradient_checkpointing on") {
		t.Errorf("false with too little memory: error %v", err)
	}

	room = ck / 2
	c = base
	c.OutputDir = filepath.Join(t.TempDir(), "tiny")
	if _, err := Run(context.Background(), c, nil); err == nil || !strings.Contains(err.Error(), "about "+fmtBytes(ck)) || !strings.Contains(err.Error(), "gradient checkpointing)") {
		t.Errorf("auto with too little memory even so: error %v", err)
	}
}

// Over a run, checkpointing changes nothing but the summing order of gradients: the loss
// curve (with evaluation, across an epoch boundary, through AdamW) stays within float
// rounding of the run without it. Also when a run stopped with it resumes without it,
// and with NEFTune's noise, which the resumed part must draw as the straight run did.
func TestCheckpointingSameCurve(t *testing.T) {
	cfg := testConfig(t, testmodel.Cached(t, testmodel.Tiny("qwen2")))
	cfg.MaxSteps, cfg.BatchSize, cfg.GradAccum = 6, 1, 2
	cfg.LearningRate, cfg.WarmupSteps = 5e-3, 1
	cfg.ValSize, cfg.EvalSteps, cfg.MaxSamples = 2, 2, 12
	cfg.GradientCheckpointing = "false"
	cfg.NEFTuneAlpha = 5
	plain, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}

	ck := cfg
	ck.GradientCheckpointing = "true"
	ck.OutputDir = filepath.Join(t.TempDir(), "ck")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelAt{match: "step 3/6 ", cancel: cancel}
	if _, err := Run(ctx, ck, w); !errors.Is(err, ErrInterrupted) || !strings.Contains(w.buf.String(), ", gradient checkpointing\n") {
		t.Fatalf("interrupted run with checkpointing: %v\n%s", err, w.buf.String())
	}
	ck.GradientCheckpointing = "false"
	ck.Resume = true
	resumed, err := Run(context.Background(), ck, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(resumed.Log) != len(plain.Log) {
		t.Fatalf("%d log entries, want %d", len(resumed.Log), len(plain.Log))
	}
	close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-4*math.Abs(b) }
	for i, want := range plain.Log {
		got := resumed.Log[i]
		evalOK := (want.EvalLoss == nil) == (got.EvalLoss == nil) && (want.EvalLoss == nil || close(*got.EvalLoss, *want.EvalLoss))
		if got.Step != want.Step || !close(got.Loss, want.Loss) || !close(got.GradNorm, want.GradNorm) || !evalOK {
			t.Errorf("step %d: %+v, without checkpointing %+v", want.Step, got, want)
		}
	}
}
