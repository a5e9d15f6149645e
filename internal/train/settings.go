package train

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable that sets a training setting:
// CONCH_LEARNING_RATE, CONCH_LORA_RANK, ... (the YAML name in capitals), or the flag's
// name in capitals (CONCH_EPOCHS, CONCH_BATCH_SIZE).
const EnvPrefix = "CONCH_"

// setting ties a Config field (by its LLaMA-Factory key) to its command-line flag.
type setting struct {
	key, flag, short, help string
}

// settings lists every flag of conch finetune in help order. A setting without a flag is
// YAML and environment only.
var settings = []setting{
	{"model_name_or_path", "model", "m", "base model GGUF file"},
	{"dataset", "dataset", "", "dataset names from dataset_info.json, comma-separated"},
	{"dataset_dir", "dataset-dir", "", "folder holding dataset_info.json"},
	{"template", "template", "", "chat template: auto (the model's own) or a LLaMA-Factory template name"},
	{"stage", "", "", ""},
	{"finetuning_type", "", "", ""},
	{"lora_rank", "lora-rank", "", "LoRA rank r"},
	{"lora_alpha", "lora-alpha", "", "LoRA alpha; the update is scaled by alpha/r (0: twice the rank)"},
	{"lora_target", "lora-target", "", "layers that get LoRA: all, or some of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj; add lm_head for the output head (all,lm_head)"},
	{"use_rslora", "use-rslora", "", "rank-stabilised LoRA: scale the update by alpha/sqrt(r) instead of alpha/r"},
	{"neftune_noise_alpha", "neftune-noise-alpha", "", "NEFTune: uniform noise of +-alpha/sqrt(length*width) on the training embeddings (0: off; 5 is usual)"},
	{"loraplus_lr_ratio", "loraplus-lr-ratio", "", "LoRA+: the B matrices learn this many times faster than A (0: off; 16 is LoRA+'s usual)"},
	{"additional_target", "additional-target", "", "LLaMA-Factory's modules trained besides lora_target: lm_head (conch trains it with LoRA)"},
	{"learning_rate", "learning-rate", "", "peak learning rate"},
	{"num_train_epochs", "epochs", "", "passes over the training samples (may be fractional)"},
	{"max_steps", "max-steps", "", "optimizer steps to run; overrides --epochs when > 0"},
	{"max_grad_norm", "max-grad-norm", "", "clip the global gradient norm to this (0: no clipping)"},
	{"weight_decay", "weight-decay", "", "AdamW weight decay"},
	{"adam_beta1", "adam-beta1", "", "AdamW beta1"},
	{"adam_beta2", "adam-beta2", "", "AdamW beta2"},
	{"adam_epsilon", "adam-epsilon", "", "AdamW epsilon"},
	{"lr_scheduler_type", "lr-scheduler", "", "learning-rate schedule: " + strings.Join(Schedulers, ", ")},
	{"warmup_ratio", "warmup-ratio", "", "fraction of the steps spent warming up"},
	{"warmup_steps", "warmup-steps", "", "warm-up steps; overrides --warmup-ratio when > 0"},
	{"per_device_train_batch_size", "batch-size", "", "sequences per micro-batch"},
	{"gradient_accumulation_steps", "grad-accum", "", "micro-batches per optimizer step"},
	{"max_samples", "max-samples", "", "use at most this many samples of each dataset (0: all)"},
	{"cutoff_len", "cutoff-len", "", "truncate samples to this many tokens"},
	{"train_on_prompt", "train-on-prompt", "", "also learn the prompt tokens, not only the answers"},
	{"val_size", "val-size", "", "validation split: a fraction below 1 or a number of samples"},
	{"seed", "seed", "", "seed for the LoRA initialisation, the data order and the validation split"},
	{"logging_steps", "logging-steps", "", "log every this many steps"},
	{"eval_steps", "eval-steps", "", "evaluate on the validation split every this many steps (0: only at the end)"},
	{"save_steps", "save-steps", "", "write a checkpoint every this many steps (0: only when stopped)"},
	{"save_total_limit", "save-total-limit", "", "keep only the newest this many checkpoints (0: all)"},
	{"output_dir", "output", "o", "folder for the adapter, checkpoints, log, plot and config"},
	{"overwrite_output_dir", "overwrite-output-dir", "", "start afresh even if the output folder holds an earlier run"},
	{"compute_type", "compute-type", "", "precision of the frozen base weights during training: " + strings.Join(ComputeTypes, ", ")},
	{"gradient_checkpointing", "gradient-checkpointing", "", "recompute each layer in the backward pass to hold one layer's activations, not all: auto (when training would not fit otherwise), true, false"},
	{"threads", "threads", "t", "CPU threads (0: physical cores)"},
	{"gpu_layers", "gpu-layers", "", "train on the GPU of a CUDA build: -1 when there is one, 0 never"},
	{"resume", "resume", "", "continue the run in --output from its newest checkpoint, with its saved config"},
}

// ignoredKeys are LLaMA-Factory settings that mean nothing here (Python workers,
// reporting, mixed precision that conch decides itself): accepted with a warning.
var ignoredKeys = map[string]string{
	"trust_remote_code": "", "do_train": "", "do_eval": "", "do_predict": "", "overwrite_cache": "",
	"preprocessing_num_workers": "", "dataloader_num_workers": "", "plot_loss": "loss.png is always drawn",
	"save_only_model": "", "report_to": "", "run_name": "", "bf16": "use compute_type", "fp16": "use compute_type",
	"pure_bf16": "use compute_type", "ddp_timeout": "", "flash_attn": "", "per_device_eval_batch_size": "",
	"eval_strategy": "evaluation follows eval_steps", "evaluation_strategy": "evaluation follows eval_steps",
	"save_strategy": "checkpoints follow save_steps", "logging_strategy": "", "lora_dropout": "LoRA dropout is not implemented",
	"resume_from_checkpoint": "use --resume with output_dir", "logging_dir": "",
	"disable_tqdm": "", "quantization_bit": "quantise the base GGUF instead", "packing": "samples are never packed",
}

// refusedKeys are LLaMA-Factory settings that would make a different kind of adapter,
// one llama.cpp cannot load: refused when turned on rather than silently trained as LoRA.
var refusedKeys = map[string]string{
	"use_dora":   "DoRA adapters cannot be loaded by llama.cpp or Ollama; conch trains plain LoRA",
	"pissa_init": "PiSSA changes the base weights, so its adapter needs its own base; conch trains plain LoRA",
}

// configKeys maps every accepted YAML name (LLaMA-Factory's, and the flag's name with
// underscores) to its Config key.
var configKeys = func() map[string]string {
	m := map[string]string{}
	for _, s := range settings {
		m[s.key] = s.key
		if s.flag != "" {
			m[normKey(s.flag)] = s.key
		}
	}
	return m
}()

func normKey(k string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(k)), "-", "_")
}

// fieldByKey finds the Config field whose mapstructure name is key.
func fieldByKey(v reflect.Value, key string) reflect.Value {
	t := v.Type()
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("mapstructure") == key {
			return v.Field(i)
		}
	}
	panic("train: no Config field for " + key)
}

// AddFlags registers every training setting on fs, plus --config.
func AddFlags(fs *pflag.FlagSet) {
	def := reflect.ValueOf(Defaults())
	fs.StringP("config", "c", "", "YAML file of settings (LLaMA-Factory key names accepted)")
	for _, s := range settings {
		if s.flag == "" {
			continue
		}
		switch f := fieldByKey(def, s.key); f.Kind() {
		case reflect.String:
			fs.StringP(s.flag, s.short, f.String(), s.help)
		case reflect.Int:
			fs.IntP(s.flag, s.short, int(f.Int()), s.help)
		case reflect.Uint64:
			fs.Uint64P(s.flag, s.short, f.Uint(), s.help)
		case reflect.Float64:
			fs.Float64P(s.flag, s.short, f.Float(), s.help)
		case reflect.Bool:
			fs.BoolP(s.flag, s.short, f.Bool(), s.help)
		default:
			panic("train: unsupported setting type " + f.Kind().String())
		}
	}
	// A bare --gradient-checkpointing turns it on.
	if f := fs.Lookup("gradient-checkpointing"); f != nil {
		f.NoOptDefVal = "true"
	}
}

// LoadConfig layers the settings: flags given on the command line over CONCH_*
// environment variables over the YAML file (--config, or the saved config.yaml of the run
// being resumed) over Defaults. It returns warnings about YAML keys it ignored.
func LoadConfig(fs *pflag.FlagSet) (Config, []string, error) {
	path := ""
	if f := fs.Lookup("config"); f != nil {
		path = f.Value.String()
	}
	// Resuming without --config reads the run's own config.yaml, so the output folder
	// must be known before the YAML layer is.
	if path == "" {
		pre, _, err := layer(fs, "")
		if err != nil {
			return Config{}, nil, err
		}
		if pre.Resume && pre.OutputDir != "" {
			path = filepath.Join(pre.OutputDir, configFile)
			if _, err := os.Stat(path); err != nil {
				return Config{}, nil, fmt.Errorf("cannot resume: %s has no %s (was it written by conch finetune?)", pre.OutputDir, configFile)
			}
		}
	}
	return layer(fs, path)
}

func layer(fs *pflag.FlagSet, yamlPath string) (Config, []string, error) {
	v := viper.New()
	def := reflect.ValueOf(Defaults())
	for _, s := range settings {
		v.SetDefault(s.key, fieldByKey(def, s.key).Interface())
		envs := []string{s.key, EnvPrefix + strings.ToUpper(s.key)}
		if s.flag != "" && normKey(s.flag) != s.key {
			envs = append(envs, EnvPrefix+strings.ToUpper(normKey(s.flag)))
		}
		if err := v.BindEnv(envs...); err != nil {
			return Config{}, nil, err
		}
		if s.flag == "" || fs == nil {
			continue
		}
		if f := fs.Lookup(s.flag); f != nil {
			if err := v.BindPFlag(s.key, f); err != nil {
				return Config{}, nil, err
			}
		}
	}
	var warnings []string
	if yamlPath != "" {
		m, w, err := readYAML(yamlPath)
		if err != nil {
			return Config{}, nil, err
		}
		warnings = w
		if err := v.MergeConfigMap(m); err != nil {
			return Config{}, nil, fmt.Errorf("%s: %w", yamlPath, err)
		}
	}
	cfg := Config{}
	if err := v.Unmarshal(&cfg); err != nil {
		return Config{}, nil, fmt.Errorf("settings: %w", err)
	}
	return cfg, warnings, nil
}

// readYAML reads a flat YAML file of settings and renames its keys to Config keys.
func readYAML(path string) (map[string]any, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	raw := map[string]any{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := map[string]any{}
	var warnings, harmless []string
	for _, k := range keys {
		val := raw[k]
		nk := normKey(k)
		if why, ok := refusedKeys[nk]; ok {
			if val != nil && val != false {
				return nil, nil, fmt.Errorf("%s: %s: %s (remove it or set it to false)", path, k, why)
			}
			continue
		}
		if why, ok := ignoredKeys[nk]; ok {
			switch {
			case val == nil || val == false:
			case why == "":
				harmless = append(harmless, k)
			default:
				warnings = append(warnings, fmt.Sprintf("%s: %s has no effect in conch (%s)", path, k, why))
			}
			continue
		}
		if nk == "disable_gradient_checkpointing" {
			// LLaMA-Factory's switch, the other way round
			off, isBool := val.(bool)
			if !isBool {
				return nil, nil, fmt.Errorf("%s: %s must be true or false", path, k)
			}
			nk, val = "gradient_checkpointing", strconv.FormatBool(!off)
		}
		key, ok := configKeys[nk]
		if !ok {
			warnings = append(warnings, fmt.Sprintf("%s: unknown key %s ignored", path, k))
			continue
		}
		if _, dup := out[key]; dup {
			return nil, nil, fmt.Errorf("%s: %s is set twice (under two names)", path, key)
		}
		switch x := val.(type) {
		case nil:
			continue // "key:" with no value keeps the default, as in LLaMA-Factory
		case []any: // dataset: [a, b] and lora_target: [q_proj, v_proj]
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			val = strings.Join(parts, ",")
		case map[string]any:
			return nil, nil, fmt.Errorf("%s: %s must be a single value, not a mapping", path, k)
		}
		out[key] = val
	}
	if len(harmless) > 0 {
		warnings = append(warnings, fmt.Sprintf("%s: ignored, no effect in conch: %s", path, strings.Join(harmless, ", ")))
	}
	return out, warnings, nil
}

// writeConfig saves the effective settings as YAML that LoadConfig reads back.
func writeConfig(path string, c Config) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	head := "# Effective settings of this run (conch finetune). Resume with:\n#   conch finetune --output " +
		filepath.Dir(path) + " --resume\n"
	return writeFileAtomic(path, append([]byte(head), b...))
}

// writeFileAtomic writes a file so that a crash leaves the old or the new contents,
// never half of one.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err2 := f.Sync(); err == nil {
		err = err2
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return errors.New("write " + path + ": " + err.Error())
	}
	return nil
}
