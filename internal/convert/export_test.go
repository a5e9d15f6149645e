package convert_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/magicconch/conch/internal/convert"
)

// LLaMA-Factory's export from its own outputs: a Hugging Face base and a PEFT adapter go
// in as folders, one GGUF comes out, and it answers as the adapter applied at run time.
func TestExportFromFolders(t *testing.T) {
	hf, base := hfAndBase(t, "qwen2")
	tmp := t.TempDir()
	peft := filepath.Join(tmp, "lora")
	os.Mkdir(peft, 0o755)
	peftAdapter(t, hf, peft, 8, 16, false, 5)
	ad := filepath.Join(tmp, "adapter.gguf")
	if _, err := convert.Adapter(context.Background(), peft, ad, base, convert.Options{}); err != nil {
		t.Fatal(err)
	}

	outDir := filepath.Join(tmp, "export", "conch_sft")
	res, err := convert.Export(context.Background(), convert.ExportParams{Model: hf, Adapters: []string{peft}, Output: outDir, Type: "f32"})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(outDir, "conch_sft-f32.gguf"); res.Output != want || len(res.Converted) != 2 {
		t.Fatalf("output %s (want %s), converted %v", res.Output, want, res.Converted)
	}
	if left, _ := os.ReadDir(outDir); len(left) != 1 {
		t.Fatalf("the export folder holds %v: scratch files were left", left)
	}
	ids := probeIDs(t, base)
	plain := logits(t, base, ids)
	runtime := logits(t, base, ids, ad)
	exported := logits(t, res.Output, ids)
	moved, _ := diff(runtime, plain)
	d, sc := diff(exported, runtime)
	t.Logf("adapter effect %.3f, export vs run-time adapter %.6f (logits up to %.2f)", moved, d, sc)
	// The run-time path rounds activations to F16 against the F16 base; the export is F32.
	if d > 0.01*sc || moved < 20*d {
		t.Fatalf("exported model differs from the run-time adapter by %g (effect %g)", d, moved)
	}

	// Folders that are not what they claim fail with the folder named, leaving nothing.
	bad := t.TempDir()
	if _, err := convert.Export(context.Background(), convert.ExportParams{Model: hf, Adapters: []string{bad}, Output: filepath.Join(tmp, "x.gguf")}); err == nil {
		t.Fatal("an empty adapter folder was exported")
	}
	if m, _ := filepath.Glob(filepath.Join(tmp, ".x.gguf*")); len(m) != 0 {
		t.Fatalf("left behind: %v", m)
	}
}

// An export into a folder it had to create removes that folder again when it fails, and
// keeps a folder that was there before.
func TestExportFailureLeavesNoFolder(t *testing.T) {
	hf, _ := hfAndBase(t, "qwen2")
	tmp := t.TempDir()
	bad := filepath.Join(tmp, "no-such-adapter.gguf")
	outDir := filepath.Join(tmp, "export")
	if _, err := convert.Export(context.Background(), convert.ExportParams{Model: hf, Adapters: []string{bad}, Output: outDir}); err == nil {
		t.Fatal("a missing adapter was exported")
	}
	if _, err := os.Stat(outDir); !os.IsNotExist(err) {
		t.Fatalf("the failed export left its folder: %v", err)
	}
	os.Mkdir(outDir, 0o755)
	if _, err := convert.Export(context.Background(), convert.ExportParams{Model: hf, Adapters: []string{bad}, Output: outDir}); err == nil {
		t.Fatal("a missing adapter was exported")
	}
	if left, err := os.ReadDir(outDir); err != nil || len(left) != 0 {
		t.Fatalf("the folder that was there before: %v, holds %v", err, left)
	}
}
