package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/magicconch/conch/llama"
	"github.com/spf13/cobra"
)

func init() {
	var (
		model, output, typ string
		loras              []string
		threads            int
		force, quiet       bool
	)
	cmd := &cobra.Command{
		Use:   "merge --model BASE.gguf --lora ADAPTER.gguf[:SCALE] --output OUT.gguf [--type TYPE]",
		Short: "Fold LoRA adapters into the base model and write a standalone GGUF",
		Long: `merge computes W' = W + scale·(alpha/r)·B·A for every weight an adapter touches, in F32
from the dequantised base, one tensor at a time, and writes a model llama.cpp, Ollama and
conchd load directly. Every base key (tokenizer, chat template, rope settings) is kept;
the inputs' sha256 and the adapters' settings are recorded under conch.merge.*.

Output types (llama.cpp's names): ` + strings.Join(llama.QuantTypeNames(), ", ") + `.
The plain types are converted straight from the F32 merge; the K-quant mixes go through
llama.cpp's quantiser. Tensors whose rows do not fill the type's blocks keep a type that
fits (f16 at worst), named in one warning line.
The output is written beside its final name and moved into place only when complete
and loadable; an existing file is replaced only with --force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" || output == "" || len(loras) == 0 {
				return fmt.Errorf("need --model, --lora and --output")
			}
			p := llama.MergeParams{Base: model, Output: output, Type: typ, Threads: threads, Force: force}
			for _, spec := range loras {
				path, scale, err := parseLoraSpec(spec)
				if err != nil {
					return err
				}
				p.LoRAs = append(p.LoRAs, llama.MergeLoRA{Path: path, Scale: scale})
			}
			var end func()
			if !quiet {
				p.Progress, end = progressLine("merging")
			}
			ctx, stop := interruptible()
			defer stop()
			res, err := llama.Merge(ctx, p)
			if end != nil {
				end()
			}
			if err != nil {
				return err
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
	f.StringVarP(&model, "model", "m", "", "base model GGUF")
	f.StringArrayVar(&loras, "lora", nil, "LoRA adapter GGUF, optionally PATH:SCALE (repeatable)")
	f.StringVarP(&output, "output", "o", "", "merged model to write")
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
