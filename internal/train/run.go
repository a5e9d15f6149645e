package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/magicconch/conch/internal/dataset"
	"github.com/magicconch/conch/llama"
	"go.yaml.in/yaml/v3"
)

// ErrInterrupted is what Run returns (wrapped, with how to resume) when its context
// ends: the current step is finished and a checkpoint saved first.
var ErrInterrupted = errors.New("training interrupted")

// Result describes a finished (or interrupted) run.
type Result struct {
	OutputDir    string
	Adapter      string // the final adapter; "" when interrupted
	Checkpoint   string // the newest checkpoint written by this call
	Steps        int    // optimizer steps done
	TotalSteps   int
	TrainSamples int
	ValSamples   int
	TrainLoss    float64 // the last logged training loss
	EvalLoss     float64 // the last evaluation loss; NaN without a validation split
	Log          []LogEntry
}

// Run trains a LoRA adapter as cfg says, writing everything into cfg.OutputDir, and
// reports progress to w (nil: nowhere). Cancelling ctx stops it after the current step
// with a checkpoint; the error then wraps ErrInterrupted.
func Run(ctx context.Context, cfg Config, w io.Writer) (*Result, error) {
	pr := newProgress(w)
	defer pr.done()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	out := cfg.OutputDir
	removeIncomplete(out)
	cps, err := listCheckpoints(out)
	if err != nil {
		return nil, err
	}
	var from *checkpoint
	switch {
	case cfg.Resume && len(cps) == 0:
		return nil, fmt.Errorf("cannot resume: %s has no checkpoint", filepath.Join(out, checkpointsDir))
	case cfg.Resume:
		from = &cps[len(cps)-1]
	case !cfg.Overwrite && (len(cps) > 0 || exists(filepath.Join(out, adapterFile)) || exists(filepath.Join(out, logFile))):
		return nil, fmt.Errorf("%s already holds a training run: continue it with --resume, or start afresh with --overwrite-output-dir", out)
	}

	j, err := prepare(cfg, pr)
	if err != nil {
		return nil, err
	}
	defer j.vocab.Close()
	n := len(j.train)
	perStep := cfg.BatchSize * cfg.GradAccum
	stepsPerEpoch := (n + perStep - 1) / perStep
	total := cfg.MaxSteps
	if total == 0 {
		total = max(1, int(math.Ceil(cfg.Epochs*float64(stepsPerEpoch)-1e-9)))
	}
	sched := NewSchedule(cfg, total)

	st := &loopState{Version: loopVersion, TotalSteps: total, DataSeed: cfg.Seed, Identity: j.ident}
	if from != nil {
		if st, err = readLoopState(from.Dir); err != nil {
			return nil, err
		}
		if err := checkIdentity(st.Identity, j.ident); err != nil {
			return nil, err
		}
		if st.TotalSteps != total {
			pr.line("note: the run now has %d steps instead of %d; the learning-rate schedule changes from here on", total, st.TotalSteps)
			st.TotalSteps = total
		}
	} else if cfg.Overwrite {
		for _, f := range []string{checkpointsDir, logFile, plotFile, adapterFile} {
			if err := os.RemoveAll(filepath.Join(out, f)); err != nil {
				return nil, err
			}
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	// Absolute paths let the run be resumed from any working directory.
	saved := cfg
	saved.Resume = false
	saved.Model, _ = filepath.Abs(cfg.Model)
	saved.DatasetDir, _ = filepath.Abs(cfg.DatasetDir)
	if err := writeConfig(filepath.Join(out, configFile), saved); err != nil {
		return nil, err
	}
	// The log restarts from the checkpoint: lines a crashed session wrote after it are
	// dropped, as the steps they describe are about to be redone.
	logf, err := rewriteLog(filepath.Join(out, logFile), st.Log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()

	res := &Result{OutputDir: out, TotalSteps: total, TrainSamples: n, ValSamples: len(j.val), EvalLoss: math.NaN()}
	pr.line("%s: %d training and %d validation samples (%d tokens, %d learned; %d cut to cutoff_len), template %s",
		filepath.Base(cfg.Model), n, len(j.val), j.stats.Tokens, j.stats.Supervised, j.stats.Truncated, j.tmpl.Name)
	ck := ""
	if j.params.Checkpoint {
		ck = ", gradient checkpointing"
	}
	pr.line("%d steps of %d sequences (%d per epoch), lr %g %s with %d warm-up steps; memory estimate %s on %s%s",
		total, perStep, stepsPerEpoch, cfg.LearningRate, cfg.Scheduler, sched.Warmup, fmtBytes(j.estimate), j.device(), ck)
	if st.Step >= total {
		pr.line("the run in %s is already complete (%d steps)", out, st.Step)
		if exists(filepath.Join(out, adapterFile)) {
			res.Adapter = filepath.Join(out, adapterFile)
		}
		return finish(res, st, out), nil
	}

	tr, err := llama.NewTrainer(j.vocab, j.params)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	lastSaved := -1
	if from != nil {
		if err := tr.LoadState(filepath.Join(from.Dir, stateFile)); err != nil {
			return nil, fmt.Errorf("resume from %s: %w", from.Dir, err)
		}
		lastSaved = st.Step
		pr.line("resumed from %s (step %d, epoch %d)", from.Dir, st.Step, st.Epoch)
	}

	l := &loop{cfg: cfg, j: j, tr: tr, st: st, sched: sched, pr: pr, logf: logf, out: out}
	sessionStart, sessionFrom := time.Now(), st.Step
	order := epochOrder(st.DataSeed, st.Epoch, n)
	for st.Step < total {
		if ctx.Err() != nil {
			if st.Step > lastSaved {
				if res.Checkpoint, err = l.checkpoint(); err != nil {
					return nil, err
				}
			}
			finish(res, st, out)
			if st.Step == 0 {
				return res, fmt.Errorf("%w before the first step; nothing was saved", ErrInterrupted)
			}
			return res, fmt.Errorf("%w at step %d of %d; checkpoint in %s; continue with: conch finetune --output %s --resume",
				ErrInterrupted, st.Step, total, filepath.Join(out, checkpointsDir, fmt.Sprintf("step-%d", st.Step)), out)
		}
		if st.Pos >= n {
			st.Epoch++
			st.Pos = 0
			order = epochOrder(st.DataSeed, st.Epoch, n)
		}
		take := min(perStep, n-st.Pos)
		if err := l.step(order[st.Pos : st.Pos+take]); err != nil {
			return nil, err
		}
		done := st.Step - sessionFrom
		eta := time.Duration(float64(time.Since(sessionStart)) / float64(done) * float64(total-st.Step))
		// A logged line shows the logged loss (the mean since the previous line), the live
		// line the step's own.
		rep := stepReport{step: st.Step, total: total, epoch: l.epoch(), loss: l.lastLoss, lr: l.lastLR,
			gradNorm: l.lastGradNorm, tokPerS: l.lastTokPerS, eta: eta}
		logged := len(st.Log) > 0 && st.Log[len(st.Log)-1].Step == st.Step
		if logged {
			e := st.Log[len(st.Log)-1]
			rep.loss, rep.tokPerS = e.Loss, e.TokensPerS
		}
		pr.step(rep, logged)
		if cfg.SaveSteps > 0 && st.Step%cfg.SaveSteps == 0 || st.Step == total {
			if res.Checkpoint, err = l.checkpoint(); err != nil {
				return nil, err
			}
			lastSaved = st.Step
		}
	}
	pr.done()

	final := filepath.Join(out, adapterFile)
	if err := tr.SaveAdapter(final, l.meta()); err != nil { // written atomically
		return nil, err
	}
	finish(res, st, out)
	res.Adapter = final
	pr.line("done: %d steps, loss %.4f%s; adapter %s", st.Step, res.TrainLoss, evalText(res.EvalLoss), final)
	return res, nil
}

func evalText(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return fmt.Sprintf(", eval_loss %.4f", v)
}

// finish fills the result from the loop state and draws the loss plot.
func finish(res *Result, st *loopState, out string) *Result {
	res.Steps = st.Step
	res.Log = st.Log
	for _, e := range st.Log {
		res.TrainLoss = e.Loss
		if e.EvalLoss != nil {
			res.EvalLoss = *e.EvalLoss
		}
	}
	if len(st.Log) > 0 {
		if err := writePlot(filepath.Join(out, plotFile), "conch finetune: "+filepath.Base(out), st.Log); err != nil {
			fmt.Fprintln(os.Stderr, "conch: loss plot:", err)
		}
	}
	return res
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// rewriteLog writes entries as trainer_log.jsonl and returns it open for appending.
func rewriteLog(path string, entries []LogEntry) (*os.File, error) {
	var data []byte
	for _, e := range entries {
		b, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		data = append(append(data, b...), '\n')
	}
	if err := writeFileAtomic(path, data); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
}

// loop is the state of one session of training.
type loop struct {
	cfg   Config
	j     *job
	tr    *llama.Trainer
	st    *loopState
	sched Schedule
	pr    *progress
	logf  *os.File
	out   string

	lastLoss, lastLR, lastGradNorm, lastTokPerS float64
}

func (l *loop) epoch() float64 {
	return float64(l.st.Epoch) + float64(l.st.Pos)/float64(len(l.j.train))
}

// noiseSeed seeds the NEFTune noise of the n-th sequence of optimizer step `step`
// (counted from 0), so that a resumed run draws what the straight run drew.
func noiseSeed(seed uint64, step, n int) uint64 {
	return seed ^ uint64(step+1)*0x9E3779B97F4A7C15 ^ uint64(n+1)*0xC2B2AE3D27D4EB4F
}

// step runs one optimizer step over the samples at idx: one Accumulate per sequence,
// then one Step at this step's learning rate. It then logs and evaluates as due.
func (l *loop) step(idx []int) error {
	st, cfg := l.st, l.cfg
	t0 := time.Now()
	var lossSum float64
	var learned int
	var tokens int64
	for n, i := range idx {
		s := l.j.train[i]
		if cfg.NEFTuneAlpha > 0 {
			l.tr.SetNoiseSeed(noiseSeed(cfg.Seed, st.Step, n))
		}
		ls, k, err := l.tr.Accumulate(s.Tokens, s.Labels)
		if err != nil {
			return fmt.Errorf("step %d, sample %s: %w", st.Step+1, s.Source, err)
		}
		lossSum += ls
		learned += k
		tokens += int64(len(s.Tokens))
	}
	lr := l.sched.LR(st.Step)
	gn, err := l.tr.Step(float32(lr), float32(cfg.WeightDecay), float32(cfg.MaxGradNorm))
	if err != nil {
		return fmt.Errorf("step %d: %w", st.Step+1, err)
	}
	loss := lossSum / float64(max(learned, 1))
	if isBad(loss) || isBad(gn) {
		return fmt.Errorf("training diverged at step %d (loss %v, gradient norm %v): lower --learning-rate or --max-grad-norm", st.Step+1, loss, gn)
	}
	secs := time.Since(t0).Seconds()
	st.Step++
	st.Pos += len(idx)
	st.Tokens += tokens
	st.Pending.LossSum += loss
	st.Pending.Steps++
	st.Pending.Tokens += tokens
	st.Pending.Seconds += secs
	l.lastLoss, l.lastLR, l.lastGradNorm = loss, lr, gn
	l.lastTokPerS = float64(tokens) / math.Max(secs, 1e-9)

	total := st.TotalSteps
	logNow := st.Step%cfg.LoggingSteps == 0 || st.Step == total
	evalNow := len(l.j.val) > 0 && (cfg.EvalSteps > 0 && st.Step%cfg.EvalSteps == 0 || st.Step == total)
	var evalLoss *float64
	if evalNow {
		v, err := evaluate(l.tr, l.j.val)
		if err != nil {
			return fmt.Errorf("evaluation at step %d: %w", st.Step, err)
		}
		evalLoss = &v
	}
	st.Elapsed += time.Since(t0).Seconds()
	if !logNow && !evalNow {
		return nil
	}
	p := st.Pending
	e := LogEntry{
		Step: st.Step, Epoch: round(l.epoch(), 4), Loss: p.LossSum / float64(p.Steps), EvalLoss: evalLoss,
		LR: lr, GradNorm: gn, TokensPerS: round(float64(p.Tokens)/math.Max(p.Seconds, 1e-9), 1), Elapsed: round(st.Elapsed, 3),
	}
	st.Log = append(st.Log, e)
	st.Pending = pending{}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := l.logf.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", logFile, err)
	}
	if evalLoss != nil {
		l.pr.line("step %d/%d: eval_loss %.4f (%d validation samples)", st.Step, total, *evalLoss, len(l.j.val))
	}
	return nil
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// evaluate is the mean loss per learned token over the validation samples.
func evaluate(tr *llama.Trainer, val []dataset.Sample) (float64, error) {
	var sum float64
	var n int
	for _, s := range val {
		ls, k, err := tr.Eval(s.Tokens, s.Labels)
		if err != nil {
			return 0, fmt.Errorf("sample %s: %w", s.Source, err)
		}
		sum += ls
		n += k
	}
	if n == 0 {
		return math.NaN(), nil
	}
	return sum / float64(n), nil
}

// checkpoint saves the current state and redraws the plot.
func (l *loop) checkpoint() (string, error) {
	dir, err := saveCheckpoint(l.out, l.st, l.tr, l.meta(), l.cfg.SaveTotalLimit)
	if err != nil {
		return "", err
	}
	if len(l.st.Log) > 0 {
		if err := writePlot(filepath.Join(l.out, plotFile), "conch finetune: "+filepath.Base(l.out), l.st.Log); err != nil {
			l.pr.line("loss plot: %v", err)
		}
	}
	return dir, nil
}

// meta is the training record stored in an adapter's GGUF metadata.
func (l *loop) meta() map[string]string {
	c := l.cfg
	c.Resume = false
	conf, _ := yaml.Marshal(c)
	m := map[string]string{
		"base_model":    filepath.Base(c.Model),
		"dataset":       c.Dataset,
		"template":      l.j.tmpl.Name,
		"lora_rank":     strconv.Itoa(c.LoraRank),
		"lora_alpha":    strconv.FormatFloat(c.Alpha(), 'g', -1, 64),
		"lora_target":   l.j.ident.LoraTarget,
		"learning_rate": strconv.FormatFloat(c.LearningRate, 'g', -1, 64),
		"scheduler":     c.Scheduler,
		"steps":         strconv.Itoa(l.st.Step),
		"epochs":        strconv.FormatFloat(round(l.epoch(), 4), 'g', -1, 64),
		"samples":       strconv.Itoa(len(l.j.train)),
		"seed":          strconv.FormatUint(c.Seed, 10),
		"config":        string(conf),
	}
	if c.UseRSLoRA {
		m["use_rslora"] = "true" // adapter.lora.alpha holds lora_alpha·√r
	}
	if c.NEFTuneAlpha > 0 {
		m["neftune_noise_alpha"] = strconv.FormatFloat(c.NEFTuneAlpha, 'g', -1, 64)
	}
	if c.LoraPlusRatio > 0 {
		m["loraplus_lr_ratio"] = strconv.FormatFloat(c.LoraPlusRatio, 'g', -1, 64)
	}
	if n := len(l.st.Log); n > 0 {
		e := l.st.Log[n-1]
		m["loss"] = strconv.FormatFloat(e.Loss, 'g', 6, 64)
		if e.EvalLoss != nil {
			m["eval_loss"] = strconv.FormatFloat(*e.EvalLoss, 'g', 6, 64)
		}
	}
	return m
}
