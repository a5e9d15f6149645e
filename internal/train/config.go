// Package train is the LoRA fine-tuning loop: epochs over shuffled samples, micro-batches
// and gradient accumulation, the learning-rate schedule, evaluation, checkpoints and
// resume, the loss log and its plot, and progress. Each sequence is one native
// llama.Trainer.Accumulate call; each optimizer step one Trainer.Step.
package train

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Config holds every training setting. The yaml (and mapstructure, for viper) names are
// LLaMA-Factory's, so its SFT LoRA YAML files load as they are.
type Config struct {
	Model          string `yaml:"model_name_or_path" mapstructure:"model_name_or_path"`
	Dataset        string `yaml:"dataset" mapstructure:"dataset"` // comma-separated names from dataset_info.json
	DatasetDir     string `yaml:"dataset_dir" mapstructure:"dataset_dir"`
	Template       string `yaml:"template" mapstructure:"template"` // "auto": from the model's chat template
	Stage          string `yaml:"stage" mapstructure:"stage"`
	FinetuningType string `yaml:"finetuning_type" mapstructure:"finetuning_type"`

	LoraRank   int     `yaml:"lora_rank" mapstructure:"lora_rank"`
	LoraAlpha  float64 `yaml:"lora_alpha" mapstructure:"lora_alpha"` // 0: twice the rank, as LLaMA-Factory
	LoraTarget string  `yaml:"lora_target" mapstructure:"lora_target"`
	// AdditionalTarget is LLaMA-Factory's key for modules trained besides the LoRA
	// layers. Conch accepts lm_head there and trains it with LoRA like the others.
	AdditionalTarget string `yaml:"additional_target,omitempty" mapstructure:"additional_target"`
	// UseRSLoRA scales the update by alpha/√r (rank-stabilised LoRA) instead of alpha/r.
	// The adapter then records alpha·√r, so that llama.cpp's alpha/r applies the same scale.
	UseRSLoRA bool `yaml:"use_rslora" mapstructure:"use_rslora"`
	// NEFTuneAlpha > 0 adds NEFTune's noise to the training embeddings (0: off).
	NEFTuneAlpha float64 `yaml:"neftune_noise_alpha" mapstructure:"neftune_noise_alpha"`
	// LoraPlusRatio (LoRA+) makes the B halves learn this many times faster (0: off).
	LoraPlusRatio float64 `yaml:"loraplus_lr_ratio" mapstructure:"loraplus_lr_ratio"`

	LearningRate   float64 `yaml:"learning_rate" mapstructure:"learning_rate"`
	Epochs         float64 `yaml:"num_train_epochs" mapstructure:"num_train_epochs"`
	MaxSteps       int     `yaml:"max_steps" mapstructure:"max_steps"` // > 0 overrides epochs
	MaxGradNorm    float64 `yaml:"max_grad_norm" mapstructure:"max_grad_norm"`
	WeightDecay    float64 `yaml:"weight_decay" mapstructure:"weight_decay"`
	AdamBeta1      float64 `yaml:"adam_beta1" mapstructure:"adam_beta1"`
	AdamBeta2      float64 `yaml:"adam_beta2" mapstructure:"adam_beta2"`
	AdamEpsilon    float64 `yaml:"adam_epsilon" mapstructure:"adam_epsilon"`
	Scheduler      string  `yaml:"lr_scheduler_type" mapstructure:"lr_scheduler_type"`
	WarmupRatio    float64 `yaml:"warmup_ratio" mapstructure:"warmup_ratio"`
	WarmupSteps    int     `yaml:"warmup_steps" mapstructure:"warmup_steps"` // > 0 overrides warmup_ratio
	BatchSize      int     `yaml:"per_device_train_batch_size" mapstructure:"per_device_train_batch_size"`
	GradAccum      int     `yaml:"gradient_accumulation_steps" mapstructure:"gradient_accumulation_steps"`
	MaxSamples     int     `yaml:"max_samples" mapstructure:"max_samples"` // 0: all
	CutoffLen      int     `yaml:"cutoff_len" mapstructure:"cutoff_len"`
	TrainOnPrompt  bool    `yaml:"train_on_prompt" mapstructure:"train_on_prompt"`
	ValSize        float64 `yaml:"val_size" mapstructure:"val_size"` // < 1: a fraction; >= 1: a count
	Seed           uint64  `yaml:"seed" mapstructure:"seed"`
	LoggingSteps   int     `yaml:"logging_steps" mapstructure:"logging_steps"`
	EvalSteps      int     `yaml:"eval_steps" mapstructure:"eval_steps"` // 0: only at the end
	SaveSteps      int     `yaml:"save_steps" mapstructure:"save_steps"` // 0: no periodic checkpoints
	SaveTotalLimit int     `yaml:"save_total_limit" mapstructure:"save_total_limit"`
	OutputDir      string  `yaml:"output_dir" mapstructure:"output_dir"`
	Overwrite      bool    `yaml:"overwrite_output_dir" mapstructure:"overwrite_output_dir"`

	ComputeType string `yaml:"compute_type" mapstructure:"compute_type"`
	// GradientCheckpointing: "auto" (on only when training would not fit in memory
	// otherwise), "true" or "false"; see Checkpointing.
	GradientCheckpointing string `yaml:"gradient_checkpointing" mapstructure:"gradient_checkpointing"`
	Threads               int    `yaml:"threads" mapstructure:"threads"`       // 0: physical cores
	GPULayers             int    `yaml:"gpu_layers" mapstructure:"gpu_layers"` // CUDA builds: layers on the GPU (-1 all)

	// Resume continues from the newest complete checkpoint in OutputDir. It is a
	// command, not a setting, so it is never saved in config.yaml.
	Resume bool `yaml:"-" mapstructure:"resume"`
}

// Defaults returns the settings used where nothing else says otherwise.
func Defaults() Config {
	return Config{
		DatasetDir:            "data",
		Template:              "auto",
		Stage:                 "sft",
		FinetuningType:        "lora",
		LoraRank:              8,
		LoraTarget:            "all",
		LearningRate:          1e-4,
		Epochs:                3,
		MaxGradNorm:           1,
		AdamBeta1:             0.9,
		AdamBeta2:             0.999,
		AdamEpsilon:           1e-8,
		Scheduler:             "cosine",
		BatchSize:             2,
		GradAccum:             4,
		CutoffLen:             1024,
		Seed:                  42,
		LoggingSteps:          10,
		SaveSteps:             500,
		SaveTotalLimit:        3,
		ComputeType:           "f32",
		GradientCheckpointing: "auto",
		GPULayers:             -1,
	}
}

// Checkpointing parses gradient_checkpointing: on, off, or auto (on when needed). With
// it, each layer is computed twice (about a third more time) and only one layer's
// activations are held at once instead of every layer's.
func (c Config) Checkpointing() (on, auto bool, err error) {
	switch strings.ToLower(strings.TrimSpace(c.GradientCheckpointing)) {
	case "auto", "":
		return false, true, nil
	case "true", "on", "yes", "1":
		return true, false, nil
	case "false", "off", "no", "0":
		return false, false, nil
	}
	return false, false, fmt.Errorf("gradient_checkpointing %q: use auto, true or false", c.GradientCheckpointing)
}

// Schedulers are the accepted lr_scheduler_type values.
var Schedulers = []string{"constant", "constant_with_warmup", "linear", "cosine"}

// ComputeTypes are the accepted compute_type values: how the trainer holds the frozen
// base weights (f32: exact, 4 bytes a weight; f16, bf16, q8_0: faster and smaller, with
// products rounded to that type as llama.cpp rounds them when it runs such a model;
// base: each matrix in the GGUF's own type, so a Q4_K_M model trains as it will run).
var ComputeTypes = []string{"f32", "f16", "bf16", "q8_0", "base"}

// loraTargets maps LLaMA-Factory's (Hugging Face) module names to the GGUF weight names
// the adapter uses; GGUF names are accepted as well.
var loraTargets = map[string]string{
	"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
	"gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
	"attn_q": "attn_q", "attn_k": "attn_k", "attn_v": "attn_v", "attn_output": "attn_output",
	"ffn_gate": "ffn_gate", "ffn_up": "ffn_up", "ffn_down": "ffn_down",
	headTarget: headTarget, "output": headTarget,
}

// headTarget is the output head (PEFT's lm_head, output.weight in GGUF). LoRA there lets
// a model learn to emit tokens its frozen head almost never predicts (Chinese as byte
// tokens on an English base, say). It needs a model whose head is not tied to the
// token embeddings.
const headTarget = "lm_head"

// allTargets is what lora_target "all" means: every linear layer of every block, without
// the output head (as in LLaMA-Factory; add it with "all,lm_head").
var allTargets = []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}

// Targets returns the names of the weights that get LoRA adapters: GGUF block weight
// names, and lm_head for the output head (from lora_target or additional_target).
func (c Config) Targets() ([]string, error) {
	var out []string
	add := func(names ...string) {
		for _, n := range names {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	for _, t := range splitList(c.LoraTarget) {
		t = strings.ToLower(t)
		if t == "all" {
			add(allTargets...)
			continue
		}
		g, ok := loraTargets[t]
		if !ok {
			return nil, fmt.Errorf("lora_target %q: unknown layer (use all, or some of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; add lm_head for the output head)", t)
		}
		add(g)
	}
	for _, t := range splitList(c.AdditionalTarget) {
		if g := loraTargets[strings.ToLower(t)]; g != headTarget {
			return nil, fmt.Errorf("additional_target %q: conch can only add lm_head (trained with LoRA)", t)
		}
		add(headTarget)
	}
	if len(out) == 0 {
		return nil, errors.New("lora_target is empty (use all)")
	}
	return out, nil
}

// DatasetNames splits the dataset setting.
func (c Config) DatasetNames() []string { return splitList(c.Dataset) }

// Alpha is lora_alpha with its default (twice the rank) filled in.
func (c Config) Alpha() float64 {
	if c.LoraAlpha == 0 {
		return 2 * float64(c.LoraRank)
	}
	return c.LoraAlpha
}

// AdapterAlpha is the alpha the trainer and the adapter use: with use_rslora, alpha·√r,
// so that alpha/r (what llama.cpp applies) is rsLoRA's alpha/√r.
func (c Config) AdapterAlpha() float64 {
	if c.UseRSLoRA {
		return c.Alpha() * math.Sqrt(float64(c.LoraRank))
	}
	return c.Alpha()
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Validate checks every setting without touching any file, so a bad config is refused
// before anything slow happens.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Stage != "sft" {
		bad("stage %q is not supported: conch trains only stage: sft", c.Stage)
	}
	if c.FinetuningType != "lora" {
		bad("finetuning_type %q is not supported: conch trains only finetuning_type: lora", c.FinetuningType)
	}
	if c.Model == "" {
		bad("no base model: set --model (model_name_or_path) to a GGUF file")
	}
	if len(c.DatasetNames()) == 0 {
		bad("no dataset: set --dataset to names from dataset_info.json")
	}
	if c.OutputDir == "" {
		bad("no output folder: set --output (output_dir)")
	}
	if c.Template == "" {
		bad("template is empty (use auto or a template name)")
	}
	if c.LoraRank < 1 || c.LoraRank > 4096 {
		bad("lora_rank %d: must be between 1 and 4096", c.LoraRank)
	}
	if c.LoraAlpha < 0 || isBad(c.LoraAlpha) {
		bad("lora_alpha %g: must be positive", c.LoraAlpha)
	}
	if _, err := c.Targets(); err != nil {
		errs = append(errs, err)
	}
	if c.NEFTuneAlpha < 0 || isBad(c.NEFTuneAlpha) {
		bad("neftune_noise_alpha %g: must not be negative (0 turns it off)", c.NEFTuneAlpha)
	}
	if c.LoraPlusRatio < 0 || isBad(c.LoraPlusRatio) {
		bad("loraplus_lr_ratio %g: must not be negative (0 turns LoRA+ off)", c.LoraPlusRatio)
	}
	if !(c.LearningRate > 0) || isBad(c.LearningRate) {
		bad("learning_rate %g: must be positive", c.LearningRate)
	}
	if c.MaxSteps < 0 {
		bad("max_steps %d: must not be negative", c.MaxSteps)
	}
	if c.MaxSteps == 0 && (!(c.Epochs > 0) || isBad(c.Epochs)) {
		bad("num_train_epochs %g: must be positive", c.Epochs)
	}
	if c.MaxGradNorm < 0 || isBad(c.MaxGradNorm) {
		bad("max_grad_norm %g: must not be negative (0 turns clipping off)", c.MaxGradNorm)
	}
	if c.WeightDecay < 0 || isBad(c.WeightDecay) {
		bad("weight_decay %g: must not be negative", c.WeightDecay)
	}
	if !(c.AdamBeta1 >= 0 && c.AdamBeta1 < 1) || !(c.AdamBeta2 >= 0 && c.AdamBeta2 < 1) {
		bad("adam_beta1 %g and adam_beta2 %g: must be in [0, 1)", c.AdamBeta1, c.AdamBeta2)
	}
	if !(c.AdamEpsilon > 0) || isBad(c.AdamEpsilon) {
		bad("adam_epsilon %g: must be positive", c.AdamEpsilon)
	}
	if !slices.Contains(Schedulers, c.Scheduler) {
		bad("lr_scheduler_type %q: use one of %s", c.Scheduler, strings.Join(Schedulers, ", "))
	}
	if !(c.WarmupRatio >= 0 && c.WarmupRatio < 1) {
		bad("warmup_ratio %g: must be in [0, 1)", c.WarmupRatio)
	}
	if c.WarmupSteps < 0 {
		bad("warmup_steps %d: must not be negative", c.WarmupSteps)
	}
	if c.BatchSize < 1 || c.BatchSize > 1<<16 {
		bad("per_device_train_batch_size %d: must be at least 1", c.BatchSize)
	}
	if c.GradAccum < 1 || c.GradAccum > 1<<16 {
		bad("gradient_accumulation_steps %d: must be at least 1", c.GradAccum)
	}
	if c.MaxSamples < 0 {
		bad("max_samples %d: must not be negative (0: all)", c.MaxSamples)
	}
	if c.CutoffLen < 2 || c.CutoffLen > 1<<20 {
		bad("cutoff_len %d: must be between 2 and 1048576", c.CutoffLen)
	}
	if c.ValSize < 0 || isBad(c.ValSize) || (c.ValSize >= 1 && c.ValSize != math.Trunc(c.ValSize)) {
		bad("val_size %g: a fraction below 1 or a whole number of samples", c.ValSize)
	}
	if c.LoggingSteps < 1 {
		bad("logging_steps %d: must be at least 1", c.LoggingSteps)
	}
	if c.EvalSteps < 0 || c.SaveSteps < 0 || c.SaveTotalLimit < 0 {
		bad("eval_steps, save_steps and save_total_limit must not be negative")
	}
	if !slices.Contains(ComputeTypes, c.ComputeType) {
		bad("compute_type %q: use one of %s", c.ComputeType, strings.Join(ComputeTypes, ", "))
	}
	if _, _, err := c.Checkpointing(); err != nil {
		errs = append(errs, err)
	}
	if c.Threads < 0 {
		bad("threads %d: must not be negative (0: physical cores)", c.Threads)
	}
	return errors.Join(errs...)
}

func isBad(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }
