package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/magicconch/conch/internal/convert"
	"github.com/magicconch/conch/llama"
)

func init() {
	var (
		model, output, typ, config string
		loras                      []string
		threads                    int
		force, quiet               bool
	)
	cmd := &cobra.Command{
		Use:   "export --config merge.yaml  |  export -m BASE --lora ADAPTER -o OUT [--type TYPE]",
		Short: "LLaMA-Factory's export: merge adapters (GGUF or PEFT folders) into a base (GGUF or Hugging Face folder) and write one GGUF",
		Long: `export does what llamafactory-cli export does, and writes GGUF: the base may be a GGUF file or
a Hugging Face folder, each adapter a GGUF file or a PEFT folder as LLaMA-Factory saves it
(folders are converted first, into hidden files beside the output that are removed after).
The output is a .gguf file, or a folder that receives <folder>-<type>.gguf.

--config reads LLaMA-Factory's export YAML: model_name_or_path, adapter_name_or_path
(comma-separated), export_dir, export_quantization_bit (8: q8_0, 4: q4_k_m) and
finetuning_type (lora); template, export_size, export_device and export_legacy_format
mean nothing for GGUF and are ignored. Flags win over the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if config != "" {
				if err := applyExportConfig(config, cmd.Flags()); err != nil {
					return err
				}
			}
			if model == "" || output == "" || len(loras) == 0 {
				return fmt.Errorf("need --model, --lora and --output (or model_name_or_path, adapter_name_or_path and export_dir in --config)")
			}
			p := convert.ExportParams{Model: model, Output: output, Type: typ, Threads: threads, Force: force}
			for _, spec := range loras {
				path, scale, err := parseLoraSpec(spec)
				if err != nil {
					return err
				}
				p.Adapters, p.Scales = append(p.Adapters, path), append(p.Scales, scale)
			}
			var end func()
			if !quiet {
				p.Progress, end = progressLine("merging")
			}
			ctx, stop := interruptible()
			defer stop()
			res, err := convert.Export(ctx, p)
			if end != nil {
				end()
			}
			if err != nil {
				return err
			}
			if len(res.Converted) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "converted %s to GGUF on the way\n", strings.Join(res.Converted, ", "))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d of %d tensors merged, %s, %.1f MiB in %.1fs\n", res.Output, res.Merged, res.Tensors,
				res.Type.Name, float64(res.Size)/(1<<20), res.Duration.Seconds())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&config, "config", "", "LLaMA-Factory export YAML")
	f.StringVarP(&model, "model", "m", "", "base model: GGUF file or Hugging Face folder")
	f.StringArrayVar(&loras, "lora", nil, "LoRA adapter: GGUF file or PEFT folder, optionally PATH:SCALE (repeatable)")
	f.StringVarP(&output, "output", "o", "", "a .gguf file, or a folder for <folder>-<type>.gguf")
	f.StringVar(&typ, "type", "f16", "output type: "+strings.Join(llama.QuantTypeNames(), ", "))
	f.IntVarP(&threads, "threads", "t", 0, "threads (0: physical cores)")
	f.BoolVarP(&force, "force", "f", false, "overwrite an existing output")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress on stderr")
	root.AddCommand(cmd)
}

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
