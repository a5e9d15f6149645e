package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/magicconch/conch/llama"
	"github.com/spf13/cobra"
)

func init() {
	var (
		model, prompt, system string
		loras                 []string
		chat, showStats       bool
		n, ctxSize, threads   int
		gpuLayers             int
		sp                    llama.SamplerParams
		seed                  int64
		stops                 []string
	)
	cmd := &cobra.Command{
		Use:   "generate -m MODEL.gguf -p PROMPT",
		Short: "Generate text from a prompt, streamed to stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" || prompt == "" {
				return fmt.Errorf("need --model and --prompt")
			}
			sp.Seed = uint32(seed)
			m, err := llama.LoadModel(model, llama.ModelParams{GPULayers: gpuLayers})
			if err != nil {
				return err
			}
			defer m.Close()
			lctx, err := llama.NewContext(m, llama.ContextParams{NCtx: ctxSize, Threads: threads})
			if err != nil {
				return err
			}
			defer lctx.Close()
			for _, spec := range loras {
				path, scale, err := parseLoraSpec(spec)
				if err != nil {
					return err
				}
				a, err := llama.LoadAdapter(m, path)
				if err != nil {
					return err
				}
				defer a.Close()
				if err := lctx.SetAdapter(a, scale); err != nil {
					return err
				}
			}
			text := prompt
			if chat {
				var msgs []llama.Message
				if system != "" {
					msgs = append(msgs, llama.Message{Role: "system", Content: system})
				}
				msgs = append(msgs, llama.Message{Role: "user", Content: prompt})
				if text, err = renderChat(m, msgs); err != nil {
					return err
				}
			}
			toks, err := m.Tokenize(text, true, chat)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			out := cmd.OutOrStdout()
			res, err := lctx.Generate(ctx, toks, llama.GenerateOptions{MaxTokens: n, Stop: stops, Sampler: sp},
				func(s string) bool { fmt.Fprint(out, s); return true })
			fmt.Fprintln(out)
			if err != nil {
				return err
			}
			if showStats {
				fmt.Fprintf(os.Stderr, "prompt: %d tokens, %.1f tok/s; generated: %d tokens, %.1f tok/s; finish: %s\n",
					res.PromptTokens, float64(res.PromptTokens)/res.PromptTime.Seconds(),
					res.Tokens, float64(max(res.Tokens-1, 0))/res.GenTime.Seconds(), res.FinishReason)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&model, "model", "m", "", "model GGUF file")
	f.StringVarP(&prompt, "prompt", "p", "", "prompt text")
	f.StringVar(&system, "system", "", "system message (with --chat)")
	f.StringArrayVar(&loras, "lora", nil, "LoRA adapter GGUF, optionally PATH:SCALE (repeatable)")
	f.BoolVar(&chat, "chat", false, "wrap the prompt in the model's chat template")
	f.IntVarP(&n, "max-tokens", "n", 256, "most tokens to generate")
	f.IntVarP(&ctxSize, "ctx-size", "c", 4096, "context size")
	f.IntVarP(&threads, "threads", "t", 0, "threads (0: physical cores)")
	f.IntVar(&gpuLayers, "gpu-layers", -1, "layers to offload to the GPU on a CUDA build (-1: all)")
	f.Float32Var(&sp.Temperature, "temp", 0, "temperature (0: greedy)")
	f.Float32Var(&sp.TopP, "top-p", 0, "top-p (nucleus) sampling")
	f.IntVar(&sp.TopK, "top-k", 0, "top-k sampling")
	f.Float32Var(&sp.MinP, "min-p", 0, "min-p sampling")
	f.Float32Var(&sp.RepeatPenalty, "repeat-penalty", 1, "repetition penalty (1: off)")
	f.Float32Var(&sp.FrequencyPenalty, "frequency-penalty", 0, "frequency penalty")
	f.Float32Var(&sp.PresencePenalty, "presence-penalty", 0, "presence penalty")
	f.Int64Var(&seed, "seed", 1, "sampling seed")
	f.StringArrayVar(&stops, "stop", nil, "stop string (repeatable)")
	f.BoolVar(&showStats, "stats", false, "print speed to stderr")
	root.AddCommand(cmd)
}
