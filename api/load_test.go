package api

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/magicconch/conch/internal/engine"
	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

// endless is a request that only ends when its client goes away.
func endless(prompt string) url.Values {
	return url.Values{"prompt": {prompt}, "stream": {"true"}, "ignore_eos": {"true"}, "temperature": {"0"}}
}

// openStream starts a streaming /generate and waits for its first piece, so the request
// surely holds a slot.
func openStream(t *testing.T, d *daemon, q url.Values) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp := d.stream(ctx, "GET", "/generate?"+q.Encode(), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q: %v", line, err)
	}
	return func() { cancel(); resp.Body.Close() }
}

// A full queue answers 503 with Retry-After; a client that disconnects frees its slot,
// and the next waiting request takes it.
func TestOverloadAndCancellation(t *testing.T) {
	d := startDaemon(t, daemonOpts{ecfg: engine.Config{Parallel: 1, Queue: 1, SlotCtx: 2048}})
	stop1 := openStream(t, d, endless("one"))
	if d.eng.BusySlots() != 1 || d.metric(t, "conch_busy_slots") != 1 {
		t.Fatalf("busy slots %d", d.eng.BusySlots())
	}
	// The second request waits in the queue...
	waiting := make(chan reply, 1)
	go func() { waiting <- d.get("/generate", greedy("two", "3")) }()
	waitFor(t, "a queued request", func() bool { return d.eng.QueueDepth() == 1 })
	if d.metric(t, "conch_queue_depth") != 1 {
		t.Fatal("queue depth metric")
	}
	// ...and a third finds the queue full.
	r := d.do("POST", "/v1/chat/completions", chatBody("three", nil))
	if r.status != 503 || r.header.Get("Retry-After") == "" || r.apiErr(t).Code != "queue_full" {
		t.Fatalf("full queue: %d %v %s", r.status, r.header, r.body)
	}
	if r := d.get("/generate", greedy("four", "3")); r.status != 503 {
		t.Fatalf("full queue, /generate: %d", r.status)
	}
	// The streaming client leaves: its slot goes to the waiting request at once.
	stop1()
	select {
	case r := <-waiting:
		if r.status != 200 {
			t.Fatalf("queued request: %d %s", r.status, r.body)
		}
	case <-timeout(t):
		t.Fatal("queued request never ran after the slot was freed")
	}
	waitFor(t, "a free slot", func() bool { return d.eng.BusySlots() == 0 })
	if d.metric(t, `conch_http_requests_total{route="/v1/chat/completions",status="503"}`) != 1 {
		t.Fatal("503 not counted")
	}
}

// Cancelling a non-streaming request (client timeout) frees its slot too.
func TestCancelNonStreaming(t *testing.T) {
	d := startDaemon(t, daemonOpts{ecfg: engine.Config{Parallel: 1, SlotCtx: 4096}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, "POST", d.url+"/v1/completions", strings.NewReader(`{"prompt":"x","ignore_eos":true}`))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Error("a request that cannot end ended")
		}
	}()
	waitFor(t, "the request to start", func() bool { return d.eng.BusySlots() == 1 })
	cancel()
	waitFor(t, "the slot to be freed", func() bool { return d.eng.BusySlots() == 0 })
	<-done
	if r := d.get("/generate", greedy("hi", "2")); r.status != 200 {
		t.Fatalf("after cancel: %d", r.status)
	}
}

// The metrics count what happened: requests by route and status, tokens, latencies.
func TestMetricsCount(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	var prompt, gen, decoded int
	count := func(u usage) {
		prompt += u.PromptTokens
		gen += u.CompletionTokens
		// decoded: the prompt less what the cache held, and every answer token but the last
		decoded += u.PromptTokens - u.PromptTokensDetails.CachedTokens + u.CompletionTokens - 1
	}
	for i := range 3 {
		var g generateResponse
		q := greedy("你好", "5")
		q.Set("ignore_eos", "true")
		d.get("/generate", q).json(t, &g)
		count(g.Usage)
		if i > 0 && g.Usage.PromptTokensDetails.CachedTokens == 0 {
			t.Errorf("repeated prompt: nothing cached")
		}
		var c chatResponse
		d.do("POST", "/v1/chat/completions", chatBody("hi", map[string]any{"max_tokens": 3 + i, "ignore_eos": true})).json(t, &c)
		count(c.Usage)
	}
	// the same prompt right again: all of it but the last token comes from the cache
	var again generateResponse
	q := greedy("你好", "5")
	q.Set("ignore_eos", "true")
	d.get("/generate", q).json(t, &again)
	count(again.Usage)
	if again.Usage.PromptTokensDetails.CachedTokens != again.Usage.PromptTokens-1 {
		t.Errorf("repeated prompt: %d of %d tokens cached", again.Usage.PromptTokensDetails.CachedTokens, again.Usage.PromptTokens)
	}
	d.get("/generate", nil) // 400
	d.do("POST", "/v1/chat/completions", "{")
	for sample, want := range map[string]float64{
		`conch_http_requests_total{route="/generate",status="200"}`:            4,
		`conch_http_requests_total{route="/generate",status="400"}`:            1,
		`conch_http_requests_total{route="/v1/chat/completions",status="200"}`: 3,
		`conch_http_requests_total{route="/v1/chat/completions",status="400"}`: 1,
		`conch_prompt_tokens_total{model="conch"}`:                             float64(prompt),
		`conch_generated_tokens_total{model="conch"}`:                          float64(gen),
		`conch_time_to_first_token_seconds_count`:                              7,
		`conch_token_latency_seconds_count`:                                    float64(gen - 7),
		`conch_slots`:                                                          4,
		`conch_busy_slots`:                                                     0,
		`conch_queue_depth`:                                                    0,
		`conch_model_loaded`:                                                   1,
		`conch_decode_step_tokens_sum`:                                         float64(decoded),
	} {
		if got := d.metric(t, sample); got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
}

// LoRA adapters are extra models: listed, selectable per request, and batched correctly
// next to base-model requests.
func TestAdapters(t *testing.T) {
	m := tinyQwen(t)
	dir := t.TempDir()
	var adapters []engine.Adapter
	for i, name := range []string{"conch-lora", "other"} {
		p := filepath.Join(dir, name+".gguf")
		if err := testmodel.WriteAdapter(p, qwenPath, testmodel.AdapterSpec{Seed: uint64(i + 1), Scale: 2}); err != nil {
			t.Fatal(err)
		}
		a, err := llama.LoadAdapter(m, p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Close)
		adapters = append(adapters, engine.Adapter{Name: name, Adapter: a, Scale: 1})
	}
	d := startDaemon(t, daemonOpts{ecfg: engine.Config{Adapters: adapters}})
	var list modelList
	d.get("/v1/models", nil).json(t, &list)
	if len(list.Data) != 3 || list.Data[1].ID != "conch-lora" || list.Data[2].ID != "other" {
		t.Fatalf("%+v", list)
	}
	ask := func(model string) string {
		var r chatResponse
		rep := d.do("POST", "/v1/chat/completions", chatBody("讲个故事", map[string]any{"model": model, "max_tokens": 24, "ignore_eos": true}))
		rep.json(t, &r)
		wantModel := model
		if model == "" {
			wantModel = "conch"
		}
		if rep.status != 200 || r.Model != wantModel {
			t.Fatalf("%s: %d %s", model, rep.status, rep.body)
		}
		return r.Choices[0].Message.Content
	}
	alone := map[string]string{}
	for _, model := range []string{"", "conch-lora", "other"} {
		alone[model] = ask(model)
	}
	if alone[""] == alone["conch-lora"] || alone["conch-lora"] == alone["other"] {
		t.Fatalf("adapters change nothing: %q", alone)
	}
	// all three at once, twice each: every answer is the one it gets alone
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 2 {
		for model, want := range alone {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got := ask(model); got != want {
					mu.Lock()
					t.Errorf("%q concurrently: %q, alone %q", model, got, want)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
}
