package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/magicconch/conch/llama"
	"github.com/spf13/cobra"
)

func init() {
	root.AddCommand(&cobra.Command{
		Use:   "info MODEL.gguf",
		Short: "Show a model's architecture, size, tensor types, context length and chat template",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g, err := llama.Inspect(args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.IsAdapter() {
				fmt.Fprintf(w, "LoRA adapter for %s\n", g.Arch())
				alpha, _ := g.Float("adapter.lora.alpha")
				fmt.Fprintf(w, "alpha:        %g\ntensors:      %d\n", alpha, len(g.Tensors))
				return nil
			}
			m, err := llama.LoadModel(args[0], llama.ModelParams{})
			if err != nil {
				return err
			}
			defer m.Close()
			fmt.Fprintf(w, "model:        %s\n", m.Desc())
			if name := g.String("general.name"); name != "" {
				fmt.Fprintf(w, "name:         %s\n", name)
			}
			fmt.Fprintf(w, "architecture: %s\n", m.Arch())
			fmt.Fprintf(w, "parameters:   %s (%d)\n", human(float64(m.Params()), ""), m.Params())
			fmt.Fprintf(w, "size:         %s\n", human(float64(m.Size()), "B"))
			fmt.Fprintf(w, "layers:       %d\nembedding:    %d\n", m.Layers(), m.Embd())
			fmt.Fprintf(w, "context:      %d (trained)\n", m.TrainContext())
			fmt.Fprintf(w, "vocabulary:   %d tokens (%s)\n", m.VocabSize(), g.String("tokenizer.ggml.model"))
			fmt.Fprintf(w, "tokens:       bos=%d eos=%d eot=%d\n", m.BOS(), m.EOS(), m.EOT())
			types := map[string]int{}
			for _, t := range g.Tensors {
				types[t.TypeName()]++
			}
			var ts []string
			for k, n := range types {
				ts = append(ts, fmt.Sprintf("%s×%d", k, n))
			}
			sort.Strings(ts)
			fmt.Fprintf(w, "tensor types: %s\n", strings.Join(ts, " "))
			tmpl := m.ChatTemplate()
			if tmpl == "" {
				fmt.Fprintf(w, "chat template: none\n")
			} else {
				fmt.Fprintf(w, "chat template: %d bytes: %s\n", len(tmpl), oneLine(tmpl, 70))
			}
			return nil
		},
	})
}

func human(v float64, unit string) string {
	for _, p := range []string{"", "K", "M", "G", "T"} {
		if v < 1000 || p == "T" {
			if p == "" {
				return fmt.Sprintf("%.0f %s", v, unit)
			}
			return fmt.Sprintf("%.2f %s%s", v, p, unit)
		}
		v /= 1000
	}
	return ""
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
