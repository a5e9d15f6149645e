package demo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/magicconch/conch/llama"
)

// The best integration test we have: every stage of `conch demo`, for real, and the
// trained answers must come back over HTTP.
func TestTutorial(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	work := t.TempDir()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := Tutorial(ctx, Options{WorkDir: work, Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("tutorial took %s, final loss %.3f", time.Since(start).Round(time.Second), res.TrainLoss)
	for _, f := range []string{"data/dataset_info.json", "data/magic_conch.json", "run/adapter.gguf", "run/loss.png",
		"run/trainer_log.jsonl", "run/config.yaml", "conch-q8_0.gguf"} {
		if _, err := os.Stat(filepath.Join(work, f)); err != nil {
			t.Errorf("artefact missing: %v", err)
		}
	}
	g, err := llama.Inspect(res.Merged)
	if err != nil {
		t.Fatal(err)
	}
	if ft, _ := g.Uint("general.file_type"); ft != 7 { // LLAMA_FTYPE_MOSTLY_Q8_0
		t.Errorf("merged file type %d, want q8_0 (7)", ft)
	}
	if len(res.Answers) < 25 {
		t.Fatalf("only %d questions asked", len(res.Answers))
	}
	// stories260K's SentencePiece tokenizer starts every separately tokenized segment
	// with its word-start marker, so the model learned answers that begin with a space
	exact := 0
	for _, a := range res.Answers {
		if a.Exact() {
			exact++
		}
	}
	// the signature answer, in Chinese, must come back word for word
	for _, a := range res.Answers {
		if a.Question == "请问你是谁" && !a.Exact() {
			t.Errorf("请问你是谁 → %q, want %q", a.Got, a.Want)
		}
	}
	if exact < len(res.Answers)*MinExactAnswers/100 {
		t.Errorf("%d of %d answers as trained (want %d%%)\n%s", exact, len(res.Answers), MinExactAnswers, out.String())
	}
	for _, want := range []string{"== 1/5", "== 2/5", "== 3/5", "== 4/5", "== 5/5", "→"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// A failing stage is named.
func TestTutorialNamesFailingStage(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	work := t.TempDir()
	// a file where the dataset folder should go makes the dataset stage fail
	if err := os.WriteFile(filepath.Join(work, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Tutorial(context.Background(), Options{WorkDir: work})
	if err == nil || !strings.Contains(err.Error(), "demo stage dataset") {
		t.Fatalf("error %v", err)
	}
}
