package train

import "math"

// Schedule gives the learning rate of each optimizer step, like the Hugging Face
// transformers schedulers of the same names, with one difference: warm-up counts from
// step 1, not 0, so no step ever runs with a learning rate of exactly zero (a step at
// LR 0 would cost a full forward and backward pass and change nothing).
type Schedule struct {
	Kind   string  // constant, constant_with_warmup, linear, cosine
	Peak   float64 // the learning rate after warm-up
	Total  int     // optimizer steps in the run
	Warmup int     // warm-up steps
}

// NewSchedule builds the schedule of a config for a run of total steps. warmup_steps
// wins over warmup_ratio; the ratio rounds up, as transformers does.
func NewSchedule(c Config, total int) Schedule {
	w := c.WarmupSteps
	if w == 0 && c.WarmupRatio > 0 {
		w = int(math.Ceil(c.WarmupRatio * float64(total)))
	}
	return Schedule{Kind: c.Scheduler, Peak: c.LearningRate, Total: total, Warmup: min(w, total)}
}

// LR is the learning rate of step, counted from 0 (the first optimizer step).
func (s Schedule) LR(step int) float64 {
	if step < s.Warmup {
		// Linear ramp reaching the peak at step Warmup: (step+1)/(Warmup+1) is never 0
		// and never the full peak while warming up.
		return s.Peak * float64(step+1) / float64(s.Warmup+1)
	}
	decay := max(s.Total-s.Warmup, 1)
	progress := float64(step-s.Warmup) / float64(decay) // 0 at the end of warm-up, < 1 on the last step
	switch s.Kind {
	case "linear":
		return s.Peak * math.Max(0, 1-progress)
	case "cosine":
		return s.Peak * math.Max(0, 0.5*(1+math.Cos(math.Pi*progress)))
	default: // constant, constant_with_warmup
		return s.Peak
	}
}
