package train

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

// use_rslora trains with the scale alpha/√r and writes alpha·√r into the adapter, where
// llama.cpp's alpha/r gives that same scale back; the run records the setting, and a
// resume that changes it is refused. LoRA+ is recorded too.
func TestRSLoRAAndLoRAPlus(t *testing.T) {
	model := testmodel.Cached(t, testmodel.Tiny("qwen2"))
	cfg := testConfig(t, model)
	cfg.MaxSteps, cfg.SaveSteps = 2, 1
	cfg.LoraRank, cfg.LoraAlpha = 4, 8
	cfg.UseRSLoRA, cfg.LoraPlusRatio = true, 16
	if _, err := Run(context.Background(), cfg, nil); err != nil {
		t.Fatal(err)
	}
	adapter := filepath.Join(cfg.OutputDir, adapterFile)
	info, err := llama.Inspect(adapter)
	if err != nil {
		t.Fatal(err)
	}
	if alpha, _ := info.Float("adapter.lora.alpha"); math.Abs(alpha-16) > 1e-6 {
		t.Errorf("adapter.lora.alpha %v, want 8·√4 = 16", alpha)
	}
	var rs, plus string
	for _, k := range info.Keys() {
		switch {
		case strings.HasSuffix(k, ".use_rslora"):
			rs = info.String(k)
		case strings.HasSuffix(k, ".loraplus_lr_ratio"):
			plus = info.String(k)
		}
	}
	if rs != "true" || plus != "16" {
		t.Errorf("recorded use_rslora %q, loraplus_lr_ratio %q", rs, plus)
	}
	checkAdapterLoads(t, model, adapter)

	cfg.UseRSLoRA, cfg.Resume, cfg.MaxSteps = false, true, 3
	if _, err := Run(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "use_rslora was true") {
		t.Errorf("resume without use_rslora: error %v", err)
	}
}
