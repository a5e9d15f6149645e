package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/magicconch/conch/internal/demo"
	"github.com/spf13/cobra"
)

func init() {
	var work, saveAdapter string
	var threads int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole tutorial live on the built-in model: fine-tune → loss curve → merge → export → serve → ask",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			start := time.Now()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Conch demo in %s: the magic-conch tutorial on the built-in stories260K base\n", work)
			res, err := demo.Tutorial(ctx, demo.Options{WorkDir: work, Out: out, Threads: threads})
			if err != nil {
				return err
			}
			exact := 0
			for _, a := range res.Answers {
				// as the tutorial marks them: SentencePiece answers start with a space
				if a.Exact() {
					exact++
				}
			}
			fmt.Fprintf(out, "%d of %d answers word for word as trained; demo took %s\n", exact, len(res.Answers), time.Since(start).Round(time.Second))
			if saveAdapter != "" {
				b, err := os.ReadFile(res.Adapter)
				if err != nil {
					return err
				}
				if err := os.WriteFile(saveAdapter, b, 0o644); err != nil {
					return err
				}
				fmt.Fprintf(out, "adapter saved as %s\n", saveAdapter)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&work, "dir", "conch-demo", "working folder for every artefact")
	cmd.Flags().IntVarP(&threads, "threads", "t", 0, "threads (0: physical cores)")
	cmd.Flags().StringVar(&saveAdapter, "save-adapter", "", "also copy the trained adapter here (scripts/train-demo-adapter)")
	cmd.Flags().MarkHidden("save-adapter")
	root.AddCommand(cmd)
}
