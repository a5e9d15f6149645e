package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
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
		Short: "Convert a model to another type with llama.cpp's quantiser (q8_0, q4_k_m, ...)",
		Long: `quantize runs llama.cpp's own quantiser, keeping every metadata key (chat template
included). Types use llama.cpp's names: ` + strings.Join(llama.QuantTypeNames(), ", ") + `.
The K-quants fall back per tensor where a row does not fill their blocks, as llama.cpp does.
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
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
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
