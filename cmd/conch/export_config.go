package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// exportConfigFlags maps the keys of an export YAML (LLaMA-Factory's, and our flag
// names) to flags; exportConfigIgnored are LLaMA-Factory keys without a meaning for GGUF.
var (
	exportConfigFlags = map[string]string{
		"model_name_or_path": "model", "model": "model",
		"adapter_name_or_path": "lora", "lora": "lora",
		"export_dir": "output", "output": "output",
		"type": "type", "threads": "threads", "force": "force",
	}
	exportConfigIgnored = []string{"template", "trust_remote_code", "export_size", "export_device", "export_legacy_format",
		"infer_dtype", "export_hub_model_id"}
)

// applyExportConfig sets every flag the command line left alone from the YAML file.
func applyExportConfig(path string, f *pflag.FlagSet) error {
	v := viper.New()
	v.SetConfigFile(path)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	set := func(flag string, values ...string) error {
		if f.Changed(flag) {
			return nil
		}
		for _, val := range values {
			if err := f.Set(flag, val); err != nil {
				return fmt.Errorf("config %s: %s: %w", path, flag, err)
			}
		}
		return nil
	}
	for _, k := range v.AllKeys() {
		switch flag, ok := exportConfigFlags[k]; {
		case ok && flag == "lora":
			var list []string
			for _, s := range v.GetStringSlice(k) {
				for _, p := range strings.Split(s, ",") {
					if p = strings.TrimSpace(p); p != "" {
						list = append(list, p)
					}
				}
			}
			if err := set(flag, list...); err != nil {
				return err
			}
		case ok:
			if err := set(flag, v.GetString(k)); err != nil {
				return err
			}
		case k == "export_quantization_bit":
			types := map[int]string{8: "q8_0", 4: "q4_k_m"}
			t, known := types[v.GetInt(k)]
			if !known {
				return fmt.Errorf("config %s: export_quantization_bit %s: GGUF export takes 8 (q8_0) or 4 (q4_k_m); or set type", path, v.GetString(k))
			}
			if err := set("type", t); err != nil {
				return err
			}
		case k == "finetuning_type":
			if ft := v.GetString(k); ft != "lora" {
				return fmt.Errorf("config %s: finetuning_type %q: only LoRA adapters can be exported", path, ft)
			}
		case slices.Contains(exportConfigIgnored, k):
		default:
			return fmt.Errorf("config %s: unknown setting %q", path, k)
		}
	}
	return nil
}
