package loadgen

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"github.com/magicconch/conch/api"
	"github.com/magicconch/conch/internal/engine"
	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

func TestRunAgainstDaemon(t *testing.T) {
	llama.SetLogLevel(4)
	m, err := llama.LoadModel(testmodel.Cached(t, testmodel.Tiny("qwen2")), llama.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := api.New(api.Config{Logger: quiet, APIKeys: []string{"k"}})
	e, err := engine.New(engine.Config{Model: m, Parallel: 2, SlotCtx: 256, Threads: 2, Logger: quiet, OnStep: srv.ObserveStep})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	srv.SetEngine(e)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	defer hs.Close()

	cfg := Config{URL: "http://" + ln.Addr().String(), APIKey: "k", Prompt: "Once upon a time", MaxTokens: 12, Requests: 5}
	before, err := Scrape(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	lv, err := Run(context.Background(), cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(lv.Samples) != 5 || lv.Tokens() != 60 || lv.Throughput() <= 0 || lv.TTFT(0.5) <= 0 || lv.GenRate() <= 0 {
		t.Fatalf("%+v", lv)
	}
	for _, s := range lv.Samples {
		if s.PromptTokens == 0 || s.FirstToken > s.Total {
			t.Fatalf("sample %+v", s)
		}
	}
	after, err := Scrape(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// every generated token but each request's last was decoded, plus the prompts
	if d := after.Sub(before); d.Steps == 0 || d.StepTokens < 5*11 || d.StepSeconds <= 0 {
		t.Fatalf("engine counters %+v", d)
	}
	// a wrong key is an error, not a hang
	cfg.APIKey = "wrong"
	if _, err := Run(context.Background(), cfg, 1); err == nil {
		t.Fatal("no error with a wrong API key")
	}
}
