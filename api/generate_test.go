package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/magicconch/conch/internal/engine"
	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

func greedy(prompt string, n string) url.Values {
	return url.Values{"prompt": {prompt}, "max_tokens": {n}, "temperature": {"0"}}
}

func TestGenerateOriginalContract(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	r := d.get("/generate", greedy("你好", "12"))
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d %s: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	var raw map[string]any
	r.json(t, &raw)
	text, ok := raw["generate_text"].(string)
	if !ok || text == "" {
		t.Fatalf("no generate_text in %s", r.body)
	}
	var g generateResponse
	r.json(t, &g)
	if g.Usage.CompletionTokens == 0 || g.Usage.CompletionTokens > 12 || g.Usage.TotalTokens != g.Usage.PromptTokens+g.Usage.CompletionTokens {
		t.Fatalf("usage %+v", g.Usage)
	}
	if g.FinishReason == "length" && g.Usage.CompletionTokens != 12 {
		t.Fatalf("finish length after %d tokens", g.Usage.CompletionTokens)
	}
	// greedy is deterministic (the second time most of the prompt comes from the cache)
	var again generateResponse
	d.get("/generate", greedy("你好", "12")).json(t, &again)
	if again.GenerateText != g.GenerateText || again.Usage.PromptTokensDetails.CachedTokens == 0 {
		t.Fatalf("greedy answers differ:\n%+v\n%+v", g, again)
	}
	// echo prefixes the prompt as the original service did
	q := greedy("你好", "12")
	q.Set("echo", "true")
	var e generateResponse
	d.get("/generate", q).json(t, &e)
	if e.GenerateText != "你好"+g.GenerateText {
		t.Fatalf("echo: %q, want %q", e.GenerateText, "你好"+g.GenerateText)
	}
	// raw skips the chat template: fewer prompt tokens, another answer
	q = greedy("你好", "12")
	q.Set("raw", "true")
	var rw generateResponse
	d.get("/generate", q).json(t, &rw)
	if rw.Usage.PromptTokens >= g.Usage.PromptTokens {
		t.Fatalf("raw prompt has %d tokens, templated %d", rw.Usage.PromptTokens, g.Usage.PromptTokens)
	}
	// seeded sampling is reproducible, and another seed changes the answer
	q = url.Values{"prompt": {"讲个故事"}, "max_tokens": {"16"}, "temperature": {"1.5"}, "top_k": {"50"}, "top_p": {"0.95"}, "seed": {"7"}}
	a, b := d.get("/generate", q), d.get("/generate", q)
	var ga, gb generateResponse
	a.json(t, &ga)
	b.json(t, &gb)
	if a.status != 200 || ga.GenerateText != gb.GenerateText {
		t.Fatalf("same seed, different answers:\n%s\n%s", a.body, b.body)
	}
	q.Set("seed", "8")
	var gc generateResponse
	if d.get("/generate", q).json(t, &gc); gc.GenerateText == ga.GenerateText {
		t.Fatalf("seed has no effect: %q", gc.GenerateText)
	}
	// penalties are accepted and change a greedy answer that repeats itself
	q = greedy("你好", "40")
	var base, pen generateResponse
	d.get("/generate", q).json(t, &base)
	q.Set("frequency_penalty", "2")
	q.Set("presence_penalty", "2")
	if d.get("/generate", q).json(t, &pen); pen.GenerateText == base.GenerateText {
		t.Fatalf("penalties change nothing: %q", pen.GenerateText)
	}
}

func TestGenerateStop(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	q := greedy("Once upon a time", "30")
	q.Set("ignore_eos", "true")
	var full generateResponse
	d.get("/generate", q).json(t, &full)
	r := []rune(full.GenerateText)
	if len(r) < 8 {
		t.Fatalf("answer too short: %q", full.GenerateText)
	}
	stop := string(r[len(r)/2 : len(r)/2+2])
	q.Add("stop", "never-appears")
	q.Add("stop", stop)
	var cut generateResponse
	d.get("/generate", q).json(t, &cut)
	want := full.GenerateText[:strings.Index(full.GenerateText, stop)]
	if cut.GenerateText != want || cut.FinishReason != "stop" {
		t.Fatalf("stop %q: %q (%s), want %q", stop, cut.GenerateText, cut.FinishReason, want)
	}
}

// Streamed pieces are whole UTF-8 characters, add up to the unstreamed answer, and the
// stream ends with a done event carrying usage and the finish reason.
func TestGenerateStream(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	sawCJK := false
	for _, prompt := range []string{"你好", "请问你是谁", "讲一个关于海螺的故事"} {
		q := greedy(prompt, "48")
		var whole generateResponse
		d.get("/generate", q).json(t, &whole)
		q.Set("stream", "true")
		resp := d.stream(context.Background(), "GET", "/generate?"+q.Encode(), nil)
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Fatalf("content type %q", ct)
		}
		evs := readSSE(t, resp.Body)
		resp.Body.Close()
		if len(evs) < 2 {
			t.Fatalf("%d events", len(evs))
		}
		var text strings.Builder
		for _, ev := range evs[:len(evs)-1] {
			if ev.name != "" {
				t.Fatalf("unexpected event %q", ev.name)
			}
			if !utf8.ValidString(ev.data) {
				t.Fatalf("invalid UTF-8 in %q", ev.data)
			}
			var p generatePiece
			if err := json.Unmarshal([]byte(ev.data), &p); err != nil || p.Text == "" {
				t.Fatalf("piece %q: %v", ev.data, err)
			}
			if !utf8.ValidString(p.Text) {
				t.Fatalf("piece is not valid UTF-8: %q", p.Text)
			}
			for _, c := range p.Text {
				sawCJK = sawCJK || unicode.Is(unicode.Han, c)
			}
			text.WriteString(p.Text)
		}
		last := evs[len(evs)-1]
		var done generateDone
		if last.name != "done" || json.Unmarshal([]byte(last.data), &done) != nil {
			t.Fatalf("last event %+v", last)
		}
		// A character split between two pieces would show as U+FFFD in each piece (JSON
		// cannot carry half a character) but not in the unstreamed answer. (A random model
		// may also emit invalid bytes of its own: those show in both.)
		if strings.Count(text.String(), "\uFFFD") != strings.Count(whole.GenerateText, "\uFFFD") {
			t.Fatalf("a character was split between pieces: %q", text.String())
		}
		sameUsage := done.Usage.PromptTokens == whole.Usage.PromptTokens && done.Usage.CompletionTokens == whole.Usage.CompletionTokens
		if text.String() != whole.GenerateText || !sameUsage || done.FinishReason != whole.FinishReason {
			t.Fatalf("stream %q %+v %s, whole %q %+v %s", text.String(), done.Usage, done.FinishReason, whole.GenerateText, whole.Usage, whole.FinishReason)
		}
	}
	if !sawCJK {
		t.Fatal("no Chinese character in any answer: the test does not exercise multi-byte pieces")
	}
}

func TestGenerateBadInput(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	long := strings.Repeat("海螺 ", 300)
	cases := []struct {
		query  string
		status int
		param  string
	}{
		{"", 400, "prompt"},
		{"prompt=", 400, "prompt"},
		{"prompt=hi&max_tokens=0", 400, "max_tokens"},
		{"prompt=hi&max_tokens=-3", 400, "max_tokens"},
		{"prompt=hi&max_tokens=257", 400, "max_tokens"},
		{"prompt=hi&max_tokens=ten", 400, "max_tokens"},
		{"prompt=hi&temperature=3", 400, "temperature"},
		{"prompt=hi&temperature=NaN", 400, "temperature"},
		{"prompt=hi&top_p=1.5", 400, "top_p"},
		{"prompt=hi&top_k=-1", 400, "top_k"},
		{"prompt=hi&seed=x", 400, "seed"},
		{"prompt=hi&stream=maybe", 400, "stream"},
		{"prompt=hi&presence_penalty=9", 400, "presence_penalty"},
		{"prompt=hi&model=nope", 404, "model"},
		{"prompt=" + url.QueryEscape(long), 400, "prompt"},
	}
	for _, c := range cases {
		r := d.do("GET", "/generate?"+c.query, nil)
		if r.status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.query, r.status, c.status, r.body)
			continue
		}
		if e := r.apiErr(t); e.Param != c.param || !strings.Contains(e.Message, c.param) {
			t.Errorf("%s: error %+v does not name %q", c.query, e, c.param)
		}
	}
	if r := d.do("POST", "/generate?prompt=hi", nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /generate: %d", r.status)
	}
	if r := d.do("GET", "/nowhere", nil); r.status != 404 {
		t.Errorf("unknown route: %d", r.status)
	} else {
		r.apiErr(t)
	}
}

// Before the model is loaded, health and generation say 503; then 200.
func TestHealthzFollowsLoading(t *testing.T) {
	d := startDaemon(t, daemonOpts{noEngine: true})
	if r := d.get("/healthz", nil); r.status != 503 {
		t.Fatalf("healthz before load: %d", r.status)
	}
	r := d.get("/generate", greedy("hi", "2"))
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("generate before load: %d", r.status)
	}
	e, err := engine.New(engine.Config{Model: tinyQwen(t), SlotCtx: 128, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	d.eng = e
	d.srv.SetEngine(e)
	if r := d.get("/healthz", nil); r.status != 200 {
		t.Fatalf("healthz after load: %d", r.status)
	}
	if r := d.get("/generate", greedy("hi", "2")); r.status != 200 {
		t.Fatalf("generate after load: %d %s", r.status, r.body)
	}
}

func TestDocsAndOpenAPI(t *testing.T) {
	d := startDaemon(t, daemonOpts{acfg: Config{APIKeys: []string{"k"}}})
	r := d.get("/docs", nil)
	if r.status != 200 || !strings.Contains(string(r.body), "/generate") || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("docs: %d", r.status)
	}
	var spec struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	d.get("/openapi.json", nil).json(t, &spec)
	for _, p := range []string{"/generate", "/v1/chat/completions", "/v1/completions", "/v1/models", "/api/generate", "/api/chat", "/api/tags", "/healthz", "/metrics"} {
		if spec.Paths[p] == nil {
			t.Errorf("openapi.json lacks %s", p)
		}
	}
	// every documented route exists (with the key: auth is not what is tested here)
	for p, ops := range spec.Paths {
		for m := range ops {
			r := d.do(strings.ToUpper(m), strings.Replace(p, "{model}", "conch", 1), "{}", "Authorization", "Bearer k")
			if r.status == 404 && !strings.Contains(string(r.body), "model") {
				t.Errorf("%s %s documented but not routed", m, p)
			}
		}
	}
}

// A base model without a chat template (stories260K) gets the prompt as is, chat or not.
func TestModelWithoutChatTemplate(t *testing.T) {
	path, err := testmodel.Stories260K()
	if err != nil {
		t.Fatal(err)
	}
	m, err := llama.LoadModel(path, llama.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	d := startDaemon(t, daemonOpts{ecfg: engine.Config{Model: m}})
	var templated, raw generateResponse
	d.get("/generate", greedy("Once upon a time", "24")).json(t, &templated)
	q := greedy("Once upon a time", "24")
	q.Set("raw", "true")
	d.get("/generate", q).json(t, &raw)
	want, _ := m.Tokenize("Once upon a time", true, false)
	if templated.GenerateText == "" || templated.GenerateText != raw.GenerateText || templated.Usage.PromptTokens != len(want) {
		t.Fatalf("templated %+v, raw %+v, want %d prompt tokens", templated, raw, len(want))
	}
	var c chatResponse
	d.do("POST", "/v1/chat/completions", chatBody("Once upon a time", map[string]any{"max_tokens": 24})).json(t, &c)
	if len(c.Choices) != 1 || c.Choices[0].Message.Content != raw.GenerateText {
		t.Fatalf("chat %+v, want %q", c, raw.GenerateText)
	}
	t.Logf("stories260K: %q", raw.GenerateText)
}
