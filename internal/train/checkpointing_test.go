package train

import (
	"bytes"
	"context"
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
