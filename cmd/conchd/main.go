// Command conchd serves a model over HTTP: the original GET /generate contract and an
// OpenAI-compatible API, streaming, with parallel requests batched on one model.
//
// Settings come from flags, CONCH_* environment variables (CONCH_CTX_SIZE for
// --ctx-size) and a YAML file (--config, keys named like the flags); flags win over the
// environment, which wins over the file.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// defaultModel supplies a model when --model is not given (an embedded demo model, for
// example). nil: --model is required.
var defaultModel func() (path string, adapters []string, err error)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newCommand(nil).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "conchd:", err)
		os.Exit(1)
	}
}

// newCommand builds the command line; ready, when not nil, learns the listening address
// (tests use it).
func newCommand(ready func(addr string)) *cobra.Command {
	v := viper.New()
	cmd := &cobra.Command{
		Use:   "conchd --model MODEL.gguf",
		Short: "Serve a model over HTTP: /generate and an OpenAI-compatible /v1 API",
		Long: `conchd serves one GGUF model (and optional LoRA adapters) over HTTP.

  GET  /generate?prompt=...        {"generate_text": ...}; stream=true for Server-Sent Events
  POST /v1/chat/completions        OpenAI-compatible, stream: true supported
  POST /v1/completions
  GET  /v1/models
  POST /api/generate  /api/chat     Ollama-compatible (JSON lines); GET /api/tags
  GET  /healthz  /metrics  /docs  /openapi.json

Settings come from flags, CONCH_* environment variables (CONCH_CTX_SIZE for --ctx-size)
and a YAML file given with --config (keys named like the flags). Flags win over the
environment, which wins over the file.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := loadSettings(v, cmd.Flags())
			if err != nil {
				return err
			}
			return serve(cmd.Context(), st, ready)
		},
	}
	f := cmd.Flags()
	f.StringP("model", "m", "", "model GGUF file")
	f.StringArray("lora", nil, "LoRA adapter served as an extra model: NAME=PATH[:SCALE] (repeatable)")
	f.String("model-name", "conch", "id of the base model in the API (requests may name it in \"model\")")
	f.String("host", "127.0.0.1", "address to listen on (0.0.0.0 for every interface)")
	f.IntP("port", "p", 8000, "port to listen on (0: any free port)")
	f.IntP("parallel", "n", 4, "requests decoded together (slots)")
	f.IntP("ctx-size", "c", 4096, "context size per request: prompt and answer together")
	f.IntP("batch-size", "b", 512, "most tokens per decode step (prompt chunks and generated tokens)")
	f.Int("prefill-chunk", 128, "most prompt tokens per step while other requests generate (their next token waits for it)")
	f.IntP("threads", "t", 0, "CPU threads (0: physical cores)")
	f.Int("gpu-layers", -1, "layers to offload to the GPU on a CUDA build (-1: all)")
	f.Bool("flash-attn", true, "flash attention: much faster with several requests at once (--flash-attn=false: off)")
	f.Int("queue", 64, "requests that may wait for a slot; more get 503")
	f.Int("max-tokens", 0, "answer length for requests that set none (0: until the context is full)")
	f.StringArray("cors-origin", nil, "web origin whose pages may call the API from a browser, e.g. http://localhost:3000 (repeatable; * for any)")
	f.StringArray("api-key", nil, "accepted API key, sent as Authorization: Bearer KEY (repeatable; none: no auth)")
	f.String("max-body", "1MiB", "largest request body (bytes, or with KiB/MiB)")
	f.Duration("shutdown-timeout", 30*time.Second, "on SIGTERM, how long in-flight requests may take to finish")
	f.String("log-level", "info", "debug, info, warn or error")
	f.String("config", "", "YAML file with settings (keys named like the flags)")
	return cmd
}

// settings is the resolved configuration.
type settings struct {
	Model           string
	Loras           []string
	ModelName       string
	Host            string
	Port            int
	Parallel        int
	CtxSize         int
	BatchSize       int
	PrefillChunk    int
	Threads         int
	GPULayers       int
	FlashAttn       bool
	Queue           int
	MaxTokens       int
	APIKeys         []string
	CORSOrigins     []string
	MaxBody         int64
	ShutdownTimeout time.Duration
	LogLevel        string
}

func loadSettings(v *viper.Viper, f *pflag.FlagSet) (settings, error) {
	if err := v.BindPFlags(f); err != nil {
		return settings{}, err
	}
	v.SetEnvPrefix("CONCH")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	if path := v.GetString("config"); path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return settings{}, fmt.Errorf("config %s: %w", path, err)
		}
		if err := checkConfigKeys(v, f); err != nil {
			return settings{}, err
		}
	}
	maxBody, err := parseSize(v.GetString("max-body"))
	if err != nil {
		return settings{}, fmt.Errorf("--max-body: %w", err)
	}
	st := settings{
		Model:           v.GetString("model"),
		Loras:           stringList(v, "lora"),
		ModelName:       v.GetString("model-name"),
		Host:            v.GetString("host"),
		Port:            v.GetInt("port"),
		Parallel:        v.GetInt("parallel"),
		CtxSize:         v.GetInt("ctx-size"),
		BatchSize:       v.GetInt("batch-size"),
		PrefillChunk:    v.GetInt("prefill-chunk"),
		Threads:         v.GetInt("threads"),
		GPULayers:       v.GetInt("gpu-layers"),
		FlashAttn:       v.GetBool("flash-attn"),
		Queue:           v.GetInt("queue"),
		MaxTokens:       v.GetInt("max-tokens"),
		APIKeys:         stringList(v, "api-key"),
		CORSOrigins:     stringList(v, "cors-origin"),
		MaxBody:         maxBody,
		ShutdownTimeout: v.GetDuration("shutdown-timeout"),
		LogLevel:        v.GetString("log-level"),
	}
	return st, st.validate()
}

// stringList reads a list setting: a YAML list, or a comma-separated environment value.
func stringList(v *viper.Viper, key string) []string {
	var out []string
	for _, s := range v.GetStringSlice(key) {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// checkConfigKeys rejects misspelt keys in the config file, which would otherwise be
// silently ignored.
func checkConfigKeys(v *viper.Viper, f *pflag.FlagSet) error {
	for _, k := range v.AllKeys() {
		if f.Lookup(k) == nil && v.InConfig(k) {
			return fmt.Errorf("config %s: unknown setting %q", v.ConfigFileUsed(), k)
		}
	}
	return nil
}

func (s settings) validate() error {
	switch {
	case s.Port < 0 || s.Port > 65535:
		return fmt.Errorf("--port %d out of range", s.Port)
	case s.Parallel < 1 || s.Parallel > 256:
		return fmt.Errorf("--parallel %d out of range [1, 256]", s.Parallel)
	case s.CtxSize < 16:
		return fmt.Errorf("--ctx-size %d is too small (at least 16)", s.CtxSize)
	case s.BatchSize < s.Parallel:
		return fmt.Errorf("--batch-size %d must be at least --parallel %d", s.BatchSize, s.Parallel)
	case s.PrefillChunk < 1:
		return fmt.Errorf("--prefill-chunk %d must be at least 1", s.PrefillChunk)
	case s.Threads < 0:
		return errors.New("--threads is negative")
	case s.Queue < 0:
		return errors.New("--queue is negative")
	case s.MaxTokens < 0:
		return errors.New("--max-tokens is negative")
	case s.ShutdownTimeout < 0:
		return errors.New("--shutdown-timeout is negative")
	}
	return nil
}

// parseSize reads "1048576", "512KiB", "1MiB", "2MB".
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000_000}, {"GB", 1000_000_000}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != s {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
