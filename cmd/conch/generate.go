package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/spf13/cobra"

	"github.com/magicconch/conch/internal/chat"
	"github.com/magicconch/conch/llama"
)

func init() {
	var (
		run            modelRun
		prompt, system string
		useChat, stats bool
		n              int
		stops          []string
	)
	cmd := &cobra.Command{
		Use:   "generate -m MODEL.gguf -p PROMPT",
		Short: "Generate text from a prompt, streamed to stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if run.model == "" || prompt == "" {
				return fmt.Errorf("need --model and --prompt")
			}
			m, lctx, closeAll, err := run.open()
			if err != nil {
				return err
			}
			defer closeAll()
			var p chat.Prompt
			if useChat {
				var msgs []llama.Message
				if system != "" {
					msgs = append(msgs, llama.Message{Role: "system", Content: system})
				}
				msgs = append(msgs, llama.Message{Role: "user", Content: prompt})
				p, err = chat.NewRenderer(m, slog.Warn).Render(msgs)
			} else {
				p.Tokens, err = m.Tokenize(prompt, true, false)
			}
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			out := cmd.OutOrStdout()
			opt := llama.GenerateOptions{MaxTokens: n, Stop: append(stops, p.Stops...), Sampler: run.sampler}
			res, err := lctx.Generate(ctx, p.Tokens, opt, func(s string) bool { fmt.Fprint(out, s); return true })
			fmt.Fprintln(out)
			if err != nil {
				return err
			}
			if stats {
				printStats(res)
			}
			return nil
		},
	}
	f := cmd.Flags()
	run.addFlags(f, "model GGUF file")
	f.StringVarP(&prompt, "prompt", "p", "", "prompt text")
	f.StringVar(&system, "system", "", "system message (with --chat)")
	f.BoolVar(&useChat, "chat", false, "wrap the prompt in the model's chat template")
	f.IntVarP(&n, "max-tokens", "n", 256, "most tokens to generate")
	f.StringArrayVar(&stops, "stop", nil, "stop string (repeatable)")
	f.BoolVar(&stats, "stats", false, "print speed to stderr")
	root.AddCommand(cmd)
}

// printStats writes a generation's speed to stderr.
func printStats(res llama.GenerateResult) {
	fmt.Fprintf(os.Stderr, "prompt: %d tokens (%d reused), %.1f tok/s; generated: %d tokens, %.1f tok/s; finish: %s\n",
		res.PromptTokens, res.CachedTokens, float64(res.PromptTokens-res.CachedTokens)/res.PromptTime.Seconds(),
		res.Tokens, float64(max(res.Tokens-1, 0))/res.GenTime.Seconds(), res.FinishReason)
}
