package main

import (
	"fmt"
	"strings"

	"github.com/magicconch/conch/llama"
	"github.com/spf13/cobra"
)

func init() {
	var (
		threads    int
		force, lst bool
	)
	cmd := &cobra.Command{
		Use:   "quantize INPUT.gguf OUTPUT.gguf TYPE",
		Short: "Convert a model to another type, as llama.cpp's quantiser does (q8_0, q4_k_m, ...)",
		Long: `quantize converts a model with llama.cpp's per-tensor choices, keeping every metadata
key (chat template included). Types use llama.cpp's names: ` + strings.Join(llama.QuantTypeNames(), ", ") + `.
The plain types (f16, bf16, q8_0, q4_0, q5_1, iq4_nl, ...) are written tensor by tensor
with the bytes llama-quantize writes; the K-quant mixes by llama.cpp's quantiser itself.
A tensor whose rows do not fill the type's blocks keeps a type that fits (llama.cpp's
K-quant fallback, else f16) and one warning line names such tensors.
The output is moved into place only when complete and loadable; an existing file is
replaced only with --force.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if lst {
				return nil
			}
			return cobra.ExactArgs(3)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if lst {
				for _, q := range llama.QuantTypes() {
					fmt.Fprintf(out, "%-8s %s\n", q.Name, q.Desc)
				}
				return nil
			}
			ctx, stop := interruptible()
			defer stop()
			res, err := llama.Quantize(ctx, llama.QuantizeParams{Input: args[0], Output: args[1], Type: args[2], Threads: threads, Force: force})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s: %s, %.1f MiB in %.1fs\n", res.Output, res.Type.Name, float64(res.Size)/(1<<20), res.Duration.Seconds())
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&threads, "threads", "t", 0, "threads (0: physical cores)")
	f.BoolVarP(&force, "force", "f", false, "overwrite an existing output")
	f.BoolVar(&lst, "list", false, "list the output types")
	root.AddCommand(cmd)
}
