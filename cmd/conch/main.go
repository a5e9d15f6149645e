// Command conch fine-tunes, merges, exports and runs GGUF language models.
// Each subcommand lives in its own file of this package.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

var root = &cobra.Command{
	Use:   "conch",
	Short: "Fine-tune a language model with LoRA, merge it, and run it — one binary, CPU or CUDA",
	Long: `conch fine-tunes GGUF models with LoRA natively (no Python), merges and exports the
result, and runs it. Serve it over HTTP with conchd.`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	if err := root.Execute(); err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "conch: interrupted")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "conch:", err)
		os.Exit(1)
	}
}
