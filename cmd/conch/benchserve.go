package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"time"

	"github.com/magicconch/conch/api"
	"github.com/magicconch/conch/internal/engine"
	"github.com/magicconch/conch/internal/loadgen"
	"github.com/magicconch/conch/llama"
	"github.com/spf13/cobra"
)

// benchPrompt is about 30 tokens with Qwen's vocabulary.
const benchPrompt = "Once upon a time, in a small village by the sea, there lived a young girl who loved to collect shells on the beach every morning."

func init() {
	var (
		model, url, apiKey, prompt string
		clients                    []int
		requests, maxTokens        int
		maxTime                    time.Duration
		parallel, ctxSize, batch   int
		threads, gpuLayers         int
		flashAttn                  bool
	)
	cmd := &cobra.Command{
		Use:   "bench-serve --model MODEL.gguf",
		Short: "Measure serving speed over HTTP: time to first token and tokens/s for 1..N clients",
		Long: `bench-serve measures what callers of conchd see. It starts a daemon on 127.0.0.1
with the model (or drives a running one given with --url), sends streamed
/v1/completions requests from 1, 2, 4 and 8 concurrent clients, and reports time to
first token and tokens per second. With --model it first measures the same generation
through the Go library directly, so the cost of HTTP and scheduling shows as a
percentage. Every request has its own prompt (a random number in front), so no prompt cache
can answer it, and ignores end-of-text so each generates exactly --max-tokens.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" && url == "" {
				return fmt.Errorf("need --model (and/or --url of a running conchd)")
			}
			if len(clients) == 0 || slices.Min(clients) < 1 {
				return fmt.Errorf("--clients must list positive numbers")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			w := cmd.OutOrStdout()
			if parallel == 0 {
				parallel = slices.Max(clients)
			}
			fmt.Fprintf(w, "%s/%s, %d CPUs, threads=%d, max_tokens=%d, parallel slots=%d\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), threads, maxTokens, parallel)

			cfg := loadgen.Config{URL: url, APIKey: apiKey, Prompt: prompt, MaxTokens: maxTokens, MaxTime: maxTime}
			var lib *pairResult
			if model != "" {
				llama.SetLogLevel(4)
				m, err := llama.LoadModel(model, llama.ModelParams{GPULayers: gpuLayers})
				if err != nil {
					return err
				}
				defer m.Close()
				fmt.Fprintf(w, "model: %s (%s)\n", model, m.Desc())
				if url == "" {
					srvURL, shutdown, err := startBenchDaemon(m, parallel, ctxSize, batch, threads, flashAttn)
					if err != nil {
						return err
					}
					defer shutdown()
					cfg.URL = srvURL
				}
				if lib, err = benchPairs(ctx, m, cfg, ctxSize, batch, threads, flashAttn, 5); err != nil {
					return err
				}
				fmt.Fprintf(w, "one client, %d alternating runs each (medians): library %.1f tok/s, first token %.0f ms; HTTP %.1f tok/s, first token %.0f ms (prompt %d tokens)\n\n",
					lib.runs, lib.libRate, ms(lib.libFirst), lib.httpRate, ms(lib.httpFirst), lib.promptTokens)
			}
			// one short request first: connections, caches and the first-use costs
			warm := cfg
			warm.MaxTokens, warm.Requests = 4, 1
			if _, err := loadgen.Run(ctx, warm, 1); err != nil {
				return err
			}
			fmt.Fprintln(w, "| clients | requests | tokens | wall s | aggregate tok/s | per-request gen tok/s | TTFT p50 ms | TTFT max ms | vs 1 client | decode busy | ms/step | tokens/step |")
			fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
			var levels []loadgen.Level
			for _, c := range clients {
				cfg.Requests = requests
				if cfg.Requests == 0 {
					cfg.Requests = max(2*c, 4)
				}
				before, scrapeErr := loadgen.Scrape(ctx, cfg)
				lv, err := loadgen.Run(ctx, cfg, c)
				if err != nil {
					return err
				}
				after, err := loadgen.Scrape(ctx, cfg)
				steps := "| | |"
				if scrapeErr == nil && err == nil {
					d := after.Sub(before)
					if d.Steps > 0 {
						steps = fmt.Sprintf("%.0f%% | %.1f | %.1f |", 100*d.StepSeconds/lv.Wall.Seconds(), 1000*d.StepSeconds/d.Steps, d.StepTokens/d.Steps)
					}
				}
				levels = append(levels, lv)
				ratio := ""
				if levels[0].Clients == 1 {
					ratio = fmt.Sprintf("%.2f×", lv.Throughput()/levels[0].Throughput())
				}
				fmt.Fprintf(w, "| %d | %d | %d | %.1f | %.1f | %.1f | %.0f | %.0f | %s | %s\n", c, len(lv.Samples), lv.Tokens(),
					lv.Wall.Seconds(), lv.Throughput(), lv.GenRate(), ms(lv.TTFT(0.5)), ms(lv.TTFT(1)), ratio, steps)
			}
			summarize(w, lib, levels)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&model, "model", "m", "", "model GGUF: measured through the library, and served on 127.0.0.1 unless --url is given")
	f.StringVar(&url, "url", "", "base URL of a running conchd to drive instead of starting one (with --model too: the same model)")
	f.StringVar(&apiKey, "api-key", "", "API key for --url")
	f.StringVar(&prompt, "prompt", benchPrompt, "prompt text (each request puts its number in front)")
	f.IntSliceVar(&clients, "clients", []int{1, 2, 4, 8}, "concurrent clients, one level each")
	f.IntVar(&requests, "requests", 0, "requests per level (0: twice the clients, at least 4)")
	f.IntVarP(&maxTokens, "max-tokens", "n", 64, "tokens generated per request")
	f.DurationVar(&maxTime, "time", 90*time.Second, "per level, no new request starts after this long")
	f.IntVar(&parallel, "parallel", 0, "slots of the daemon started here (0: the most clients)")
	f.IntVarP(&ctxSize, "ctx-size", "c", 1024, "context size per request")
	f.IntVarP(&batch, "batch-size", "b", 512, "tokens per decode step")
	f.IntVarP(&threads, "threads", "t", llama.DefaultThreads(), "threads")
	f.IntVar(&gpuLayers, "gpu-layers", -1, "layers on the GPU (CUDA build)")
	f.BoolVar(&flashAttn, "flash-attn", true, "flash attention, in the daemon started here and the library runs (as conchd's default)")
	root.AddCommand(cmd)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pairResult compares one client over HTTP with the library on the same prompt and
// length, in alternating runs so that both see the same machine.
type pairResult struct {
	runs                int
	promptTokens        int
	libRate, httpRate   float64
	libFirst, httpFirst time.Duration
}

func benchPairs(ctx context.Context, m *llama.Model, cfg loadgen.Config, ctxSize, batch, threads int, flashAttn bool, runs int) (*pairResult, error) {
	lctx, err := llama.NewContext(m, llama.ContextParams{NCtx: ctxSize, NBatch: batch, Threads: threads, FlashAttn: flashAttn})
	if err != nil {
		return nil, err
	}
	defer lctx.Close()
	res := &pairResult{runs: runs}
	var libRate, httpRate []float64
	var libFirst, httpFirst []time.Duration
	for i := -1; i < runs; i++ { // run -1 warms both up
		toks, err := m.Tokenize(fmt.Sprintf("%d. %s", 1000+i, cfg.Prompt), true, true)
		if err != nil {
			return nil, err
		}
		n := cfg.MaxTokens
		if i < 0 {
			n = 4
		}
		start := time.Now()
		var first time.Duration
		r, err := lctx.Generate(ctx, toks, llama.GenerateOptions{MaxTokens: n}, func(string) bool {
			if first == 0 {
				first = time.Since(start)
			}
			return true
		})
		if err != nil {
			return nil, err
		}
		one := cfg
		one.MaxTokens, one.Requests = n, 1
		lv, err := loadgen.Run(ctx, one, 1)
		if err != nil {
			return nil, err
		}
		if i < 0 {
			continue
		}
		if r.Tokens < 2 {
			return nil, fmt.Errorf("the model ended its answer after %d tokens: no speed to measure", r.Tokens)
		}
		res.promptTokens = len(toks)
		libRate = append(libRate, float64(r.Tokens-1)/r.GenTime.Seconds())
		libFirst = append(libFirst, first)
		httpRate = append(httpRate, lv.Samples[0].GenRate())
		httpFirst = append(httpFirst, lv.Samples[0].FirstToken)
	}
	res.libRate, res.httpRate = medianOf(libRate), medianOf(httpRate)
	res.libFirst, res.httpFirst = medianOf(libFirst), medianOf(httpFirst)
	return res, nil
}

func medianOf[T int64 | float64 | time.Duration](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// startBenchDaemon serves m on 127.0.0.1 exactly as conchd does.
func startBenchDaemon(m *llama.Model, parallel, ctxSize, batch, threads int, flashAttn bool) (string, func(), error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := api.New(api.Config{Logger: quiet})
	eng, err := engine.New(engine.Config{Model: m, Parallel: parallel, SlotCtx: ctxSize, BatchSize: max(batch, parallel),
		Threads: threads, FlashAttn: flashAttn, Logger: quiet, OnFirstToken: srv.ObserveFirstToken, OnToken: srv.ObserveToken, OnStep: srv.ObserveStep})
	if err != nil {
		return "", nil, err
	}
	srv.SetEngine(eng)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		eng.Close()
		return "", nil, err
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	return "http://" + ln.Addr().String(), func() { hs.Close(); eng.Close() }, nil
}

func summarize(w io.Writer, lib *pairResult, levels []loadgen.Level) {
	fmt.Fprintln(w)
	if lib != nil {
		fmt.Fprintf(w, "HTTP + engine overhead, one client: %.1f%% of the library's generation speed (%.1f vs %.1f tok/s); first token %.0f ms vs %.0f ms\n",
			100*(1-lib.httpRate/lib.libRate), lib.httpRate, lib.libRate, ms(lib.httpFirst), ms(lib.libFirst))
	}
	var one, four *loadgen.Level
	for i := range levels {
		switch levels[i].Clients {
		case 1:
			one = &levels[i]
		case 4:
			four = &levels[i]
		}
	}
	if one != nil && four != nil {
		fmt.Fprintf(w, "aggregate throughput, 4 clients vs 1: %.2f×\n", four.Throughput()/one.Throughput())
	}
}
