package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

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
		Use:     "merge --model BASE --lora ADAPTER[:SCALE] --output OUT [--type TYPE]  |  export --config merge.yaml",
		Aliases: []string{"export"},
		Short:   "Fold LoRA adapters into the base model and write a standalone GGUF (LLaMA-Factory's export)",
		Long: `merge computes W' = W + scale·(alpha/r)·B·A for every weight an adapter touches, in F32
from the dequantised base, one tensor at a time, and writes a model llama.cpp, Ollama and
conchd load directly. Every base key (tokenizer, chat template, rope settings) is kept;
the inputs' sha256 and the adapters' settings are recorded under conch.merge.*.

It is also llamafactory-cli export, writing GGUF (conch export is the same command): the
base may be a Hugging Face folder and each adapter a PEFT folder as LLaMA-Factory saves
it; folders are converted first, into hidden files beside the output removed after.
--config reads LLaMA-Factory's export YAML: model_name_or_path, adapter_name_or_path
(comma-separated), export_dir, export_quantization_bit (8: q8_0, 4: q4_k_m) and
finetuning_type (lora); template, export_size, export_device and export_legacy_format
mean nothing for GGUF and are ignored. Flags win over the file.

Output types (llama.cpp's names): ` + strings.Join(llama.QuantTypeNames(), ", ") + `.
The plain types are converted straight from the F32 merge; the K-quant mixes go through
llama.cpp's quantiser. Tensors whose rows do not fill the type's blocks keep a type that
fits (f16 at worst), named in one warning line.
The output is a .gguf file, or a folder that receives <folder>-<type>.gguf. It is written
beside its final name and moved into place only when complete and loadable; an
existing file is replaced only with --force.`,
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
			how := "merged"
			if res.Quantized {
				how = "merged and quantised"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d of %d tensors %s, %s, %.1f MiB in %.1fs\n", res.Output, res.Merged, res.Tensors,
				how, res.Type.Name, float64(res.Size)/(1<<20), res.Duration.Seconds())
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

// progressLine returns a Progress callback drawing "label: done/total tensors" on stderr
// when it is a terminal, and a function that clears the line again.
func progressLine(label string) (func(done, total int), func()) {
	if st, err := os.Stderr.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil, nil
	}
	last, drawn := -1, false
	return func(done, total int) {
			if done == last {
				return
			}
			last, drawn = done, true
			fmt.Fprintf(os.Stderr, "\r%s: %d/%d tensors", label, done, total)
		}, func() {
			if drawn {
				fmt.Fprint(os.Stderr, "\r\033[K")
			}
		}
}
