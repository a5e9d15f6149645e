package main

import (
	"fmt"
	"runtime"
	"sort"

	"github.com/magicconch/conch/llama"
	"github.com/spf13/cobra"
)

func init() {
	var (
		models        []string
		nPrompt, nGen int
		reps, threads int
		gpuLayers     int
	)
	cmd := &cobra.Command{
		Use:   "bench -m MODEL.gguf [-m MODEL2.gguf ...]",
		Short: "Measure prompt and generation speed through the Go library and the same loop in C++",
		Long: `bench runs the same decode loop twice per repetition: once through the Go library
(llama.Context.Generate) and once entirely in C++, and prints tokens/s for both, so the
cost of the Go path is visible. The median of the repetitions is reported.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(models) == 0 {
				return fmt.Errorf("need --model")
			}
			if reps < 1 {
				return fmt.Errorf("--reps must be at least 1, got %d", reps)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "threads=%d prompt=%d gen=%d reps=%d (%s/%s, %d CPUs)\n\n", threads, nPrompt, nGen, reps, runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
			fmt.Fprintln(w, "| model | size | prompt tok/s Go | prompt tok/s C++ | gen tok/s Go | gen tok/s C++ | Go/C++ gen |")
			fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
			for _, path := range models {
				row, err := benchModel(path, nPrompt, nGen, reps, threads, gpuLayers)
				if err != nil {
					return err
				}
				fmt.Fprintln(w, row)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&models, "model", "m", nil, "model GGUF (repeatable)")
	f.IntVarP(&nPrompt, "prompt", "p", 64, "prompt tokens")
	f.IntVarP(&nGen, "gen", "n", 64, "generated tokens")
	f.IntVarP(&reps, "reps", "r", 3, "repetitions (median reported)")
	f.IntVarP(&threads, "threads", "t", llama.DefaultThreads(), "threads")
	f.IntVar(&gpuLayers, "gpu-layers", -1, "layers on the GPU (CUDA build)")
	root.AddCommand(cmd)
}

func benchModel(path string, nPrompt, nGen, reps, threads, gpuLayers int) (string, error) {
	m, err := llama.LoadModel(path, llama.ModelParams{GPULayers: gpuLayers})
	if err != nil {
		return "", err
	}
	defer m.Close()
	ctx, err := llama.NewContext(m, llama.ContextParams{NCtx: nPrompt + nGen + 16, NBatch: max(nPrompt, 32), Threads: threads})
	if err != nil {
		return "", err
	}
	defer ctx.Close()
	prompt := make([]llama.Token, nPrompt)
	for i := range prompt {
		prompt[i] = llama.Token(100 + i%(m.VocabSize()-100))
	}
	// warm up both paths once
	if _, err := ctx.BenchNative(prompt, 4); err != nil {
		return "", err
	}
	var goPP, goTG, cPP, cTG []float64
	for r := 0; r < reps; r++ {
		g, err := ctx.BenchGo(prompt, nGen)
		if err != nil {
			return "", err
		}
		c, err := ctx.BenchNative(prompt, nGen)
		if err != nil {
			return "", err
		}
		goPP, goTG = append(goPP, g.PromptRate()), append(goTG, g.GenRate())
		cPP, cTG = append(cPP, c.PromptRate()), append(cTG, c.GenRate())
	}
	gp, gt, cp, ct := median(goPP), median(goTG), median(cPP), median(cTG)
	return fmt.Sprintf("| %s | %s | %.1f | %.1f | %.2f | %.2f | %.1f%% |", m.Desc(), human(float64(m.Size()), "B"), gp, cp, gt, ct, 100*gt/ct), nil
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}
