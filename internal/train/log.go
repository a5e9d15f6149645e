package train

// Files of a run's output folder.
const (
	configFile     = "config.yaml"
	logFile        = "trainer_log.jsonl"
	plotFile       = "loss.png"
	adapterFile    = "adapter.gguf"
	checkpointsDir = "checkpoints"

	// inside checkpoints/step-N/
	stateFile = "trainer.state" // Trainer.SaveState: LoRA weights, AdamW moments, step
	loopFile  = "loop.json"     // loopState

	loopVersion = 1
)

// LogEntry is one line of trainer_log.jsonl.
type LogEntry struct {
	Step       int      `json:"step"`
	Epoch      float64  `json:"epoch"`
	Loss       float64  `json:"loss"` // mean training loss of the steps since the previous entry
	EvalLoss   *float64 `json:"eval_loss,omitempty"`
	LR         float64  `json:"lr"`
	GradNorm   float64  `json:"grad_norm"` // before clipping, of the entry's step
	TokensPerS float64  `json:"tokens_per_s"`
	Elapsed    float64  `json:"elapsed"` // seconds of training so far, over every resumed session
}

// pending adds up the steps since the last log entry.
type pending struct {
	LossSum float64 `json:"loss_sum"`
	Steps   int     `json:"steps"`
	Tokens  int64   `json:"tokens"`
	Seconds float64 `json:"seconds"`
}
