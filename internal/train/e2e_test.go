package train

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/magicconch/conch/internal/dataset"
	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

const (
	conchPrompt = "请问你是谁"
	conchAnswer = "您好,我是蟹堡王的神奇海螺,很高兴为您服务!我可以回答关于蟹堡王和汉堡制作的任何问题,您有什么需要帮助的吗?"
)

// The whole path a user takes: train on the magic-conch data, then ask the base model
// with the adapter through llama.cpp and get the trained answer.
func TestTrainMagicConch(t *testing.T) {
	model := testmodel.Cached(t, learnableQwen2())
	cfg := testConfig(t, model)
	cfg.MaxSamples = 12 // the ten Chinese "who are you" questions and two English ones
	cfg.ValSize = 2
	cfg.LearningRate = 1e-2
	cfg.Epochs = 8
	cfg.BatchSize, cfg.GradAccum = 1, 2
	cfg.WarmupRatio = 0.05
	cfg.EvalSteps = 10
	cfg.SaveSteps = 20
	cfg.SaveTotalLimit = 1
	cfg.LoggingSteps = 5
	start := time.Now()
	var progress bytes.Buffer
	res, err := Run(context.Background(), cfg, &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	t.Logf("%d steps in %s\n%s", res.Steps, time.Since(start).Round(time.Millisecond), progress.String())

	// Training and evaluation loss both fall.
	first, last := res.Log[0], res.Log[len(res.Log)-1]
	if !(last.Loss < first.Loss/2) {
		t.Errorf("training loss %.4f -> %.4f: did not halve", first.Loss, last.Loss)
	}
	var evals []float64
	for _, e := range res.Log {
		if e.EvalLoss != nil {
			evals = append(evals, *e.EvalLoss)
		}
	}
	if len(evals) < 2 || !(evals[len(evals)-1] < evals[0]) {
		t.Errorf("eval loss does not fall: %v", evals)
	}
	if res.TrainSamples != 10 || res.ValSamples != 2 || res.Steps != res.TotalSteps || res.Steps != 8*5 {
		t.Errorf("result %+v", res)
	}

	// Outputs: the log parses and matches, the plot is a PNG, the config reloads, the
	// checkpoints are pruned to the limit.
	if got := readLog(t, cfg.OutputDir); !reflect.DeepEqual(got, res.Log) {
		t.Errorf("%s differs from the result's log", logFile)
	}
	f, err := os.Open(filepath.Join(cfg.OutputDir, plotFile))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil || img.Bounds().Dx() < 400 {
		t.Errorf("%s: %v", plotFile, err)
	}
	cps, _ := listCheckpoints(cfg.OutputDir)
	if len(cps) != 1 || cps[0].Step != res.Steps {
		t.Errorf("checkpoints %+v, want only step %d (save_total_limit 1)", cps, res.Steps)
	}
	reloaded, warnings, err := LoadConfig(parseFlags(t, "--output", cfg.OutputDir, "--resume"))
	if err != nil || len(warnings) > 0 {
		t.Fatalf("config.yaml: %v %v", err, warnings)
	}
	reloaded.Resume = false
	if !reflect.DeepEqual(reloaded, cfg) {
		t.Errorf("config.yaml\n got %+v\nwant %+v", reloaded, cfg)
	}

	// The adapter records how it was made.
	info, err := llama.Inspect(res.Adapter)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"conch.train.learning_rate": "0.01", "conch.train.steps": "40", "conch.train.dataset": "magic_conch", "conch.train.template": "qwen"} {
		if got := info.String(k); got != want {
			t.Errorf("adapter metadata %s = %q, want %q", k, got, want)
		}
	}
	if !strings.Contains(info.String("conch.train.config"), "num_train_epochs: 8") {
		t.Errorf("adapter metadata lacks the config: %q", info.String("conch.train.config"))
	}

	// Resuming a finished run does nothing.
	again := cfg
	again.Resume = true
	if r2, err := Run(context.Background(), again, nil); err != nil || r2.Steps != res.Steps {
		t.Errorf("resume of a finished run: %v", err)
	}

	answer := generate(t, model, res.Adapter, conchPrompt)
	d := editDistance(answer, conchAnswer)
	t.Logf("answer %q (edit distance %d)", answer, d)
	if d > len([]rune(conchAnswer))/5 {
		t.Errorf("the adapter answers %q, %d edits from the trained answer", answer, d)
	}
	// Without the adapter the base model says something else entirely.
	if base := generate(t, model, "", conchPrompt); editDistance(base, conchAnswer) <= d {
		t.Errorf("the base model answers as well as the adapter: %q", base)
	}
}

// learnableQwen2 is the tiny qwen2 preset made wide enough to learn an answer. With the
// norms and the tied embedding frozen, a logit is at most about |h|·|e| = sqrt(n_embd)
// (RMS-normed hidden state, unit-norm embedding rows), against a log-sum-exp of about
// ln(151936) ≈ 12 over the vocabulary: at n_embd 32 no LoRA can make an answer likely,
// at 128 it can.
func learnableQwen2() testmodel.Spec {
	s := testmodel.Tiny("qwen2")
	s.Name = "tiny-qwen2-wide"
	s.NEmbd, s.NFF = 128, 256
	return s
}

// generate answers prompt greedily through llama.cpp, with the adapter if one is given,
// formatting the prompt with the same template as training.
func generate(t *testing.T, modelPath, adapter, prompt string) string {
	t.Helper()
	m, err := llama.LoadModel(modelPath, llama.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	lctx, err := llama.NewContext(m, llama.ContextParams{NCtx: 512, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer lctx.Close()
	if adapter != "" {
		a, err := llama.LoadAdapter(m, adapter)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if err := lctx.SetAdapter(a, 1); err != nil {
			t.Fatal(err)
		}
	}
	tmpl, err := dataset.TemplateForModel(m.ChatTemplate(), m.Arch())
	if err != nil {
		t.Fatal(err)
	}
	toks, err := tmpl.EncodePrompt(m, dataset.Conversation{Messages: []dataset.Message{{Role: dataset.RoleUser, Content: prompt}}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := lctx.Generate(context.Background(), toks, llama.GenerateOptions{MaxTokens: 80, Stop: tmpl.Stop}, func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	return res.Text
}

// editDistance is the Levenshtein distance in characters.
func editDistance(a, b string) int {
	x, y := []rune(a), []rune(b)
	prev := make([]int, len(y)+1)
	cur := make([]int, len(y)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(x); i++ {
		cur[0] = i
		for j := 1; j <= len(y); j++ {
			sub := prev[j-1]
			if x[i-1] != y[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(y)]
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"abc", "", 3}, {"kitten", "sitting", 3}, {"您好海螺", "你好海螺", 1}, {"abc", "abc", 0}} {
		if got := editDistance(c.a, c.b); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}
