package train

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestWritePlot(t *testing.T) {
	ev := 2.5
	log := []LogEntry{{Step: 1, Loss: 12.41}, {Step: 2, Loss: 12.37}, {Step: 3, Loss: 12.30, EvalLoss: &ev}, {Step: 4, Loss: 12.25}}
	p := filepath.Join(t.TempDir(), plotFile)
	if err := writePlot(p, "test", log); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", plotFile, err)
	}
	if b := img.Bounds(); b.Dx() < 400 || b.Dy() < 200 {
		t.Fatalf("plot is %v", b)
	}
	// Tick labels follow the spacing of the ticks.
	labels := map[string]bool{}
	for _, tk := range (decimalTicks{}).Ticks(12.25, 12.41) {
		if tk.Label != "" {
			if labels[tk.Label] {
				t.Fatalf("tick label %q repeats", tk.Label)
			}
			labels[tk.Label] = true
		}
	}
	if len(labels) < 2 {
		t.Fatalf("labels %v", labels)
	}
}
