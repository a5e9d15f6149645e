package train

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func parseFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("finetune", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A LLaMA-Factory SFT LoRA file, as its examples write them.
const llamaFactoryYAML = `### model
model_name_or_path: /models/base.gguf
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 16
lora_alpha: 32
lora_target: q_proj,v_proj
use_rslora: true
use_dora: false
loraplus_lr_ratio: 16.0
neftune_noise_alpha: 5

### dataset
dataset: identity,magic_conch
dataset_dir: my-data
template: qwen
cutoff_len: 512
max_samples: 100
overwrite_cache: true
preprocessing_num_workers: 16

### output
output_dir: saves/qwen/lora/sft
logging_steps: 5
save_steps: 100
plot_loss: true
overwrite_output_dir: true
save_only_model: false

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: linear
warmup_ratio: 0.1
bf16: true
weight_decay: 0.01
resume_from_checkpoint: null
seed: 7

### eval
val_size: 0.1
eval_steps: 50
mystery_knob: 3
`

func TestConfigLlamaFactoryYAML(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "train.yaml"), llamaFactoryYAML)
	cfg, warnings, err := LoadConfig(parseFlags(t, "--config", path))
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Model, want.Dataset, want.DatasetDir, want.Template = "/models/base.gguf", "identity,magic_conch", "my-data", "qwen"
	want.LoraRank, want.LoraAlpha, want.LoraTarget = 16, 32, "q_proj,v_proj"
	want.UseRSLoRA, want.LoraPlusRatio, want.NEFTuneAlpha = true, 16, 5
	want.CutoffLen, want.MaxSamples, want.OutputDir, want.LoggingSteps, want.SaveSteps = 512, 100, "saves/qwen/lora/sft", 5, 100
	want.Overwrite, want.BatchSize, want.GradAccum, want.LearningRate, want.Epochs = true, 1, 8, 1e-4, 3
	want.Scheduler, want.WarmupRatio, want.WeightDecay, want.Seed, want.ValSize, want.EvalSteps = "linear", 0.1, 0.01, 7, 0.1, 50
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config\n got %+v\nwant %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a valid LLaMA-Factory file is refused: %v", err)
	}
	all := strings.Join(warnings, "\n")
	for _, w := range []string{"unknown key mystery_knob", "bf16 has no effect in conch (use compute_type)", "plot_loss has no effect",
		"ignored, no effect in conch: do_train, overwrite_cache, preprocessing_num_workers, trust_remote_code"} {
		if !strings.Contains(all, w) {
			t.Errorf("no warning %q in:\n%s", w, all)
		}
	}
	// Values that ask for nothing (false, null) are not worth a warning.
	for _, quiet := range []string{"save_only_model", "resume_from_checkpoint"} {
		if strings.Contains(all, quiet) {
			t.Errorf("warning about %s set to false/null:\n%s", quiet, all)
		}
	}
	if targets, _ := cfg.Targets(); !reflect.DeepEqual(targets, []string{"attn_q", "attn_v"}) {
		t.Errorf("lora_target q_proj,v_proj: %v", targets)
	}
}

// gradient_checkpointing: a YAML bool, our auto, LLaMA-Factory's inverted switch, and a
// bare flag all come out as one of auto, on, off.
func TestConfigGradientCheckpointing(t *testing.T) {
	base := "model_name_or_path: m.gguf\ndataset: d\noutput_dir: o\n"
	cases := []struct {
		yaml     string
		flags    []string
		on, auto bool
	}{
		{"", nil, false, true},
		{"gradient_checkpointing: true\n", nil, true, false},
		{"gradient_checkpointing: false\n", nil, false, false},
		{"gradient_checkpointing: auto\n", nil, false, true},
		{"disable_gradient_checkpointing: true\n", nil, false, false},
		{"disable_gradient_checkpointing: false\n", nil, true, false},
		{"gradient_checkpointing: false\n", []string{"--gradient-checkpointing"}, true, false},
		{"", []string{"--gradient-checkpointing=false"}, false, false},
	}
	for _, c := range cases {
		path := writeFile(t, filepath.Join(t.TempDir(), "train.yaml"), base+c.yaml)
		cfg, warnings, err := LoadConfig(parseFlags(t, append([]string{"--config", path}, c.flags...)...))
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil || len(warnings) > 0 {
			t.Fatalf("%q %v: error %v, warnings %v", c.yaml, c.flags, err, warnings)
		}
		if on, auto, _ := cfg.Checkpointing(); on != c.on || auto != c.auto {
			t.Errorf("%q %v: on %v auto %v (setting %q), want %v %v", c.yaml, c.flags, on, auto, cfg.GradientCheckpointing, c.on, c.auto)
		}
	}
}

func TestConfigPrecedence(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "train.yaml"), `
model_name_or_path: yaml.gguf
learning_rate: 1e-3
lora_rank: 4
cutoff_len: 256
num_train_epochs: 2
per_device_train_batch_size: 3
`)
	// env over YAML: the YAML key's name and the flag's name both work.
	t.Setenv("CONCH_LEARNING_RATE", "2e-3")
	t.Setenv("CONCH_EPOCHS", "5")
	t.Setenv("CONCH_LORA_RANK", "6")
	t.Setenv("CONCH_SEED", "11")
	// flags over env
	cfg, _, err := LoadConfig(parseFlags(t, "--config", path, "--lora-rank", "32", "--batch-size", "5"))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"model (YAML)", cfg.Model, "yaml.gguf"},
		{"cutoff_len (YAML over default)", cfg.CutoffLen, 256},
		{"learning_rate (env over YAML)", cfg.LearningRate, 2e-3},
		{"epochs (env by flag name over YAML)", cfg.Epochs, 5.0},
		{"seed (env over default)", cfg.Seed, uint64(11)},
		{"lora_rank (flag over env and YAML)", cfg.LoraRank, 32},
		{"batch size (flag over YAML)", cfg.BatchSize, 5},
		{"adam_beta2 (default)", cfg.AdamBeta2, 0.999},
		{"template (default)", cfg.Template, "auto"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestConfigOwnNamesAndLists(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "train.yaml"), `
model: m.gguf
dataset: [magic_conch, identity]
lora-target: [q_proj, k_proj, q_proj]
epochs: 1.5
batch_size: 4
grad_accum: 2
output: out
lr_scheduler: constant
`)
	cfg, warnings, err := LoadConfig(parseFlags(t, "--config", path))
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings for conch's own names: %v", warnings)
	}
	if cfg.Model != "m.gguf" || cfg.Dataset != "magic_conch,identity" || cfg.Epochs != 1.5 || cfg.BatchSize != 4 ||
		cfg.GradAccum != 2 || cfg.OutputDir != "out" || cfg.Scheduler != "constant" {
		t.Fatalf("config %+v", cfg)
	}
	if names := cfg.DatasetNames(); !reflect.DeepEqual(names, []string{"magic_conch", "identity"}) {
		t.Errorf("dataset names %v", names)
	}
	if targets, _ := cfg.Targets(); !reflect.DeepEqual(targets, []string{"attn_q", "attn_k"}) {
		t.Errorf("targets %v", targets)
	}
}

func TestConfigRefusals(t *testing.T) {
	base := "model_name_or_path: m.gguf\ndataset: d\noutput_dir: o\n"
	cases := []struct{ yaml, want string }{
		{"stage: pt\n", `stage "pt" is not supported`},
		{"stage: dpo\n", `stage "dpo" is not supported`},
		{"finetuning_type: full\n", `finetuning_type "full" is not supported`},
		{"finetuning_type: freeze\n", `finetuning_type "freeze" is not supported`},
		{"lr_scheduler_type: polynomial\n", `lr_scheduler_type "polynomial"`},
		{"lora_target: qkv\n", `lora_target "qkv"`},
		{"additional_target: embed_tokens\n", `additional_target "embed_tokens"`},
		{"lora_rank: 0\n", "lora_rank 0"},
		{"learning_rate: -1\n", "learning_rate -1"},
		{"val_size: 2.5\n", "val_size 2.5"},
		{"compute_type: q4_0\n", `compute_type "q4_0"`},
		{"warmup_ratio: 1.5\n", "warmup_ratio 1.5"},
		{"gradient_checkpointing: sometimes\n", `gradient_checkpointing "sometimes"`},
		{"use_dora: true\n", "use_dora: DoRA adapters cannot be loaded"},
		{"pissa_init: true\n", "pissa_init: PiSSA"},
		{"loraplus_lr_ratio: -1\n", "loraplus_lr_ratio -1"},
		{"neftune_noise_alpha: -5\n", "neftune_noise_alpha -5"},
		{"disable_gradient_checkpointing: maybe\n", "disable_gradient_checkpointing must be true or false"},
	}
	for _, c := range cases {
		path := writeFile(t, filepath.Join(t.TempDir(), "train.yaml"), base+c.yaml)
		cfg, _, err := LoadConfig(parseFlags(t, "--config", path))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.yaml, err, c.want)
		}
	}
	// Missing essentials are named.
	err := Defaults().Validate()
	for _, want := range []string{"no base model", "no dataset", "no output folder"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("empty config: error %v lacks %q", err, want)
		}
	}
	// A setting given twice under two names is ambiguous.
	path := writeFile(t, filepath.Join(t.TempDir(), "train.yaml"), base+"epochs: 2\nnum_train_epochs: 3\n")
	if _, _, err := LoadConfig(parseFlags(t, "--config", path)); err == nil || !strings.Contains(err.Error(), "set twice") {
		t.Errorf("epochs and num_train_epochs: error %v", err)
	}
	// A type mistake names the setting.
	path = writeFile(t, filepath.Join(t.TempDir(), "train.yaml"), base+"lora_rank: eight\n")
	if _, _, err := LoadConfig(parseFlags(t, "--config", path)); err == nil || !strings.Contains(err.Error(), "lora_rank") {
		t.Errorf("lora_rank: eight: error %v", err)
	}
	if _, _, err := LoadConfig(parseFlags(t, "--config", filepath.Join(t.TempDir(), "missing.yaml"))); err == nil {
		t.Error("a missing --config file is accepted")
	}
}

func TestConfigResumeReadsSavedConfig(t *testing.T) {
	out := t.TempDir()
	saved := Defaults()
	saved.Model, saved.Dataset, saved.OutputDir, saved.LearningRate, saved.LoraTarget = "m.gguf", "magic_conch", out, 3e-4, "q_proj,o_proj"
	saved.Seed, saved.ValSize, saved.TrainOnPrompt = 1234, 3, true
	if err := writeConfig(filepath.Join(out, configFile), saved); err != nil {
		t.Fatal(err)
	}
	cfg, warnings, err := LoadConfig(parseFlags(t, "--output", out, "--resume", "--epochs", "4"))
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings on a saved config: %v", warnings)
	}
	want := saved
	want.Resume, want.Epochs = true, 4
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("resumed config\n got %+v\nwant %+v", cfg, want)
	}
	if _, _, err := LoadConfig(parseFlags(t, "--output", t.TempDir(), "--resume")); err == nil || !strings.Contains(err.Error(), "cannot resume") {
		t.Errorf("resume without a saved config: %v", err)
	}
}

// The output head is not part of "all" (as in LLaMA-Factory): lora_target adds it by
// name, and LLaMA-Factory's additional_target: lm_head adds it too.
func TestConfigOutputHeadTarget(t *testing.T) {
	all := []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}
	withHead := append(append([]string(nil), all...), "lm_head")
	for _, c := range []struct {
		target, additional string
		want               []string
	}{
		{"all", "", all},
		{"all,lm_head", "", withHead},
		{"lm_head, all", "", append([]string{"lm_head"}, all...)},
		{"q_proj,output", "", []string{"attn_q", "lm_head"}},
		{"all", "lm_head", withHead},
		{"all,lm_head", "lm_head", withHead},
		{"v_proj", "LM_HEAD", []string{"attn_v", "lm_head"}},
	} {
		cfg := Config{LoraTarget: c.target, AdditionalTarget: c.additional}
		got, err := cfg.Targets()
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("lora_target %q, additional_target %q: %v, %v; want %v", c.target, c.additional, got, err, c.want)
		}
	}
	path := writeFile(t, filepath.Join(t.TempDir(), "train.yaml"), "lora_target: all\nadditional_target: lm_head\n")
	cfg, warnings, err := LoadConfig(parseFlags(t, "--config", path))
	if err != nil || len(warnings) > 0 {
		t.Fatalf("additional_target: %v, warnings %v", err, warnings)
	}
	if got, _ := cfg.Targets(); !reflect.DeepEqual(got, withHead) {
		t.Errorf("additional_target from YAML: targets %v", got)
	}
	cfg, _, err = LoadConfig(parseFlags(t, "--lora-target", "all,lm_head"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := cfg.Targets(); !reflect.DeepEqual(got, withHead) {
		t.Errorf("--lora-target all,lm_head: targets %v", got)
	}
}
