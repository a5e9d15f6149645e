package main

import (
	"fmt"

	"github.com/magicconch/conch/internal/convert"
	"github.com/spf13/cobra"
)

func init() {
	var (
		adapter, force bool
		base           string
	)
	cmd := &cobra.Command{
		Use:   "convert HF_FOLDER OUT.gguf  |  convert --adapter PEFT_FOLDER OUT.gguf --base MODEL.gguf",
		Short: "Convert a Hugging Face model or a PEFT LoRA adapter to GGUF",
		Long: `convert turns a Hugging Face model folder (config.json, tokenizer.json or tokenizer.model,
single or sharded safetensors in F32, F16 or BF16; llama, qwen2 and qwen3 are tested) into
a GGUF model, using ollama's converter. Matrices are stored as F16 (BF16 when the
checkpoint is BF16); use conch quantize for smaller types.

With --adapter it converts a PEFT LoRA folder (adapter_config.json and
adapter_model.safetensors, as PEFT and LLaMA-Factory save them) into a llama.cpp LoRA
adapter for the base GGUF given with --base.

The output is written beside its final name and moved into place only when complete
and loadable; an existing file is replaced only with --force.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := interruptible()
			defer stop()
			opt := convert.Options{Force: force}
			var (
				res *convert.Result
				err error
			)
			if adapter {
				res, err = convert.Adapter(ctx, args[0], args[1], base, opt)
			} else {
				if base != "" {
					return fmt.Errorf("--base is for --adapter conversions")
				}
				res, err = convert.Model(ctx, args[0], args[1], opt)
			}
			if err != nil {
				return err
			}
			what := "model"
			if adapter {
				what = "LoRA adapter"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s %s, %d tensors, %.1f MiB in %.1fs\n", res.Output, res.Arch, what, res.Tensors,
				float64(res.Size)/(1<<20), res.Duration.Seconds())
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&adapter, "adapter", false, "the folder is a PEFT LoRA adapter")
	f.StringVar(&base, "base", "", "base model GGUF the adapter belongs to (with --adapter)")
	f.BoolVarP(&force, "force", "f", false, "overwrite an existing output")
	root.AddCommand(cmd)
}
