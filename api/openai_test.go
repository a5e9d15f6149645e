package api

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/magicconch/conch/internal/chat"
	"github.com/magicconch/conch/internal/dataset"
)

func chatBody(content string, extra map[string]any) map[string]any {
	b := map[string]any{"model": "conch", "messages": []map[string]any{{"role": "user", "content": content}}, "temperature": 0, "max_tokens": 16}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

func TestChatCompletion(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	r := d.do("POST", "/v1/chat/completions", chatBody("请问你是谁", nil))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var resp chatResponse
	r.json(t, &resp)
	if !strings.HasPrefix(resp.ID, "chatcmpl-") || resp.Object != "chat.completion" || resp.Model != "conch" || resp.Created == 0 ||
		len(resp.Choices) != 1 || resp.Choices[0].Message.Role != "assistant" || resp.Choices[0].Message.Content == "" ||
		(resp.Choices[0].FinishReason != "stop" && resp.Choices[0].FinishReason != "length") ||
		resp.Usage.CompletionTokens == 0 || resp.Usage.TotalTokens != resp.Usage.PromptTokens+resp.Usage.CompletionTokens {
		t.Fatalf("bad response %s", r.body)
	}
	// The same chat through /generate (same template) gives the same answer.
	var g generateResponse
	d.get("/generate", greedy("请问你是谁", "16")).json(t, &g)
	if g.GenerateText != resp.Choices[0].Message.Content {
		t.Fatalf("chat %q != generate %q", resp.Choices[0].Message.Content, g.GenerateText)
	}
	// content as an array of text parts, a system message, max_completion_tokens
	r = d.do("POST", "/v1/chat/completions", map[string]any{
		"messages": []map[string]any{
			{"role": "system", "content": "你是海螺"},
			{"role": "user", "content": []map[string]any{{"type": "text", "text": "请问"}, {"type": "text", "text": "你是谁"}}},
		},
		"max_completion_tokens": 3, "temperature": 0, "ignore_eos": true,
	})
	var r2 chatResponse
	r.json(t, &r2)
	if r.status != 200 || r2.Usage.CompletionTokens != 3 || r2.Choices[0].FinishReason != "length" || r2.Usage.PromptTokens == resp.Usage.PromptTokens {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestChatCompletionStream(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	var whole chatResponse
	d.do("POST", "/v1/chat/completions", chatBody("你好", map[string]any{"max_tokens": 40})).json(t, &whole)
	resp := d.stream(context.Background(), "POST", "/v1/chat/completions",
		chatBody("你好", map[string]any{"max_tokens": 40, "stream": true, "stream_options": map[string]any{"include_usage": true}}))
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	evs := readSSE(t, resp.Body)
	if n := len(evs); n < 4 || evs[n-1].data != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %+v", evs)
	}
	var text strings.Builder
	var id string
	var finish string
	var gotUsage *usage
	for i, ev := range evs[:len(evs)-1] {
		if ev.name != "" || !utf8.ValidString(ev.data) {
			t.Fatalf("event %d: %+v", i, ev)
		}
		var c chatChunk
		if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
			t.Fatal(err)
		}
		if c.Object != "chat.completion.chunk" || c.Model != "conch" || (id != "" && c.ID != id) {
			t.Fatalf("chunk %d: %s", i, ev.data)
		}
		id = c.ID
		if c.Usage != nil {
			if len(c.Choices) != 0 || i != len(evs)-2 {
				t.Fatalf("usage chunk must be last and have no choices: %s", ev.data)
			}
			gotUsage = c.Usage
			continue
		}
		if len(c.Choices) != 1 {
			t.Fatalf("chunk %d has %d choices", i, len(c.Choices))
		}
		ch := c.Choices[0]
		if i == 0 && ch.Delta.Role != "assistant" {
			t.Fatalf("first chunk has no role: %s", ev.data)
		}
		if ch.Delta.Content != nil {
			text.WriteString(*ch.Delta.Content)
		}
		if ch.FinishReason != nil {
			if finish != "" {
				t.Fatal("two finish reasons")
			}
			finish = *ch.FinishReason
		}
	}
	want := whole.Choices[0]
	if text.String() != want.Message.Content || finish != want.FinishReason || gotUsage == nil ||
		gotUsage.CompletionTokens != whole.Usage.CompletionTokens || gotUsage.PromptTokens != whole.Usage.PromptTokens {
		t.Fatalf("streamed %q (%s, %+v), whole %q (%s, %+v)", text.String(), finish, gotUsage, want.Message.Content, want.FinishReason, whole.Usage)
	}
}

func TestCompletions(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	body := map[string]any{"model": "conch", "prompt": "Once upon a time", "max_tokens": 10, "temperature": 0, "ignore_eos": true}
	var c completionResponse
	r := d.do("POST", "/v1/completions", body)
	r.json(t, &c)
	if r.status != 200 || c.Object != "text_completion" || len(c.Choices) != 1 || c.Choices[0].Text == "" ||
		c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != "length" || c.Usage == nil || c.Usage.CompletionTokens != 10 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	// /v1/completions sends the prompt as is, like /generate?raw=true
	var g generateResponse
	q := greedy("Once upon a time", "10")
	q.Set("raw", "true")
	q.Set("ignore_eos", "true")
	d.get("/generate", q).json(t, &g)
	if g.GenerateText != c.Choices[0].Text {
		t.Fatalf("completion %q != raw generate %q", c.Choices[0].Text, g.GenerateText)
	}
	// prompt as [string] and as token ids; echo
	toks, _ := chat.Tokenize(tinyQwen(t), "Once upon a time")
	for _, p := range []any{[]string{"Once upon a time"}, toks} {
		body["prompt"], body["echo"] = p, true
		var e completionResponse
		d.do("POST", "/v1/completions", body).json(t, &e)
		if len(e.Choices) != 1 || e.Choices[0].Text != "Once upon a time"+c.Choices[0].Text {
			t.Fatalf("prompt %v: %+v", p, e)
		}
	}
	// streaming: text pieces, a finish chunk, [DONE]
	body["prompt"], body["echo"], body["stream"] = "Once upon a time", false, true
	resp := d.stream(context.Background(), "POST", "/v1/completions", body)
	evs := readSSE(t, resp.Body)
	resp.Body.Close()
	var text strings.Builder
	for _, ev := range evs[:len(evs)-1] {
		var ch completionResponse
		if err := json.Unmarshal([]byte(ev.data), &ch); err != nil || len(ch.Choices) != 1 {
			t.Fatalf("chunk %q: %v", ev.data, err)
		}
		text.WriteString(ch.Choices[0].Text)
	}
	if evs[len(evs)-1].data != "[DONE]" || text.String() != c.Choices[0].Text {
		t.Fatalf("streamed %q, want %q", text.String(), c.Choices[0].Text)
	}
}

func TestModels(t *testing.T) {
	d := startDaemon(t, daemonOpts{acfg: Config{ModelName: "magic-conch"}})
	var list modelList
	d.get("/v1/models", nil).json(t, &list)
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != "magic-conch" || list.Data[0].Object != "model" {
		t.Fatalf("%+v", list)
	}
	if r := d.get("/v1/models/magic-conch", nil); r.status != 200 {
		t.Fatalf("%d", r.status)
	}
	if r := d.get("/v1/models/gpt-4", nil); r.status != 404 || r.apiErr(t).Code != "model_not_found" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	// the base model answers to its name and to no name at all; others are 404
	for model, status := range map[string]int{"magic-conch": 200, "": 200, "gpt-4": 404} {
		b := chatBody("hi", map[string]any{"model": model, "max_tokens": 2})
		if r := d.do("POST", "/v1/chat/completions", b); r.status != status {
			t.Errorf("model %q: %d %s", model, r.status, r.body)
		} else if status == 404 && r.apiErr(t).Param != "model" {
			t.Errorf("model %q: error does not name the field", model)
		}
	}
}

func TestOpenAIBadRequests(t *testing.T) {
	d := startDaemon(t, daemonOpts{acfg: Config{MaxBody: 4096}})
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	long := strings.Repeat("海螺 ", 300)
	cases := []struct {
		path, body string
		status     int
		param      string // "" when the error concerns the whole body
	}{
		{"chat", `{`, 400, ""},
		{"chat", `not json`, 400, ""},
		{"chat", ``, 400, ""},
		{"chat", `[1,2]`, 400, ""},
		{"chat", `{"messages":[]}`, 400, "messages"},
		{"chat", `{}`, 400, "messages"},
		{"chat", `{"messages":"hi"}`, 400, "messages"},
		{"chat", `{"messages":[{"role":"wizard","content":"hi"}]}`, 400, "messages[0].role"},
		{"chat", `{"messages":[{"role":"user","content":null}]}`, 400, "messages[0].content"},
		{"chat", `{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, "messages.content"},
		{"chat", `{` + msgs + `,"max_tokens":"ten"}`, 400, "max_tokens"},
		{"chat", `{` + msgs + `,"max_tokens":1.5}`, 400, "max_tokens"},
		{"chat", `{` + msgs + `,"max_tokens":0}`, 400, "max_tokens"},
		{"chat", `{` + msgs + `,"max_tokens":100000}`, 400, "max_tokens"},
		{"chat", `{` + msgs + `,"temperature":"hot"}`, 400, "temperature"},
		{"chat", `{` + msgs + `,"temperature":2.5}`, 400, "temperature"},
		{"chat", `{` + msgs + `,"top_p":-1}`, 400, "top_p"},
		{"chat", `{` + msgs + `,"n":2}`, 400, "n"},
		{"chat", `{` + msgs + `,"stream":"yes"}`, 400, "stream"},
		{"chat", `{` + msgs + `,"stop":5}`, 400, "stop"},
		{"chat", `{` + msgs + `,"frequency_penalty":3}`, 400, "frequency_penalty"},
		{"chat", `{` + msgs + `,"seed":"x"}`, 400, "seed"},
		{"chat", `{` + msgs + `,"model":"nope"}`, 404, "model"},
		{"chat", `{` + msgs + `,"top_logprobs":3}`, 400, "top_logprobs"},
		{"chat", `{` + msgs + `,"logprobs":true,"top_logprobs":21}`, 400, "top_logprobs"},
		{"chat", `{"messages":[{"role":"user","content":"` + long + `"}]}`, 400, "messages"},
		{"chat", `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 5000) + `"}]}`, 413, ""},
		{"completions", `{"prompt":""}`, 400, "prompt"},
		{"completions", `{}`, 400, "prompt"},
		{"completions", `{"prompt":["a","b"]}`, 400, "prompt"},
		{"completions", `{"prompt":[999999999]}`, 400, "prompt"},
		{"completions", `{"prompt":{"x":1}}`, 400, "prompt"},
		{"completions", `{"prompt":"hi","max_tokens":-1}`, 400, "max_tokens"},
		{"completions", `{"prompt":"hi","max_tokens":0}`, 400, "max_tokens"},
		{"completions", `{"prompt":[],"echo":true,"logprobs":1,"max_tokens":0}`, 400, "prompt"},
		{"completions", `{"prompt":"hi","logprobs":true}`, 400, "logprobs"},
		{"completions", `{"prompt":"hi","logprobs":-1}`, 400, "logprobs"},
		{"completions", `{"prompt":"hi","logprobs":21}`, 400, "logprobs"},
		{"completions", `{"prompt":"hi"} {"again":1}`, 400, ""},
	}
	for _, c := range cases {
		r := d.do("POST", "/v1/"+map[string]string{"chat": "chat/completions", "completions": "completions"}[c.path], c.body)
		name := fmt.Sprintf("%s %.60s", c.path, c.body)
		if r.status != c.status {
			t.Errorf("%s: status %d, want %d: %s", name, r.status, c.status, r.body)
			continue
		}
		e := r.apiErr(t)
		if e.Param != c.param {
			t.Errorf("%s: param %q, want %q (%s)", name, e.Param, c.param, e.Message)
		}
	}
	// unknown fields are ignored (clients send many)
	if r := d.do("POST", "/v1/chat/completions", `{`+msgs+`,"max_tokens":2,"tools":[],"whatever":{"a":[1]}}`); r.status != 200 {
		t.Fatalf("unknown fields: %d %s", r.status, r.body)
	}
}

func TestAuth(t *testing.T) {
	d := startDaemon(t, daemonOpts{acfg: Config{APIKeys: []string{"sk-one", "sk-two"}}})
	body := chatBody("hi", map[string]any{"max_tokens": 2})
	for _, c := range []struct {
		hdr    []string
		status int
	}{
		{nil, 401},
		{[]string{"Authorization", "Bearer wrong"}, 401},
		{[]string{"Authorization", "Basic c2stb25lOg=="}, 401},
		{[]string{"Authorization", "Bearer sk-one"}, 200},
		{[]string{"Authorization", "Bearer sk-two"}, 200},
	} {
		r := d.do("POST", "/v1/chat/completions", body, c.hdr...)
		if r.status != c.status {
			t.Errorf("%v: %d, want %d", c.hdr, r.status, c.status)
		}
		if c.status == 401 && (r.apiErr(t).Type != typeAuth || r.header.Get("WWW-Authenticate") == "") {
			t.Errorf("%v: bad 401 %s", c.hdr, r.body)
		}
		if g := d.get("/generate", greedy("hi", "2"), c.hdr...); g.status != c.status {
			t.Errorf("/generate %v: %d, want %d", c.hdr, g.status, c.status)
		}
		if m := d.get("/v1/models", nil, c.hdr...); m.status != c.status {
			t.Errorf("/v1/models %v: %d, want %d", c.hdr, m.status, c.status)
		}
	}
	// health, metrics and docs stay open for probes and people
	for _, p := range []string{"/healthz", "/metrics", "/docs", "/openapi.json"} {
		if r := d.get(p, nil); r.status != 200 {
			t.Errorf("%s: %d", p, r.status)
		}
	}
}

// Concurrent clients each get the answer they would get alone.
func TestConcurrentClients(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	prompts := []string{"你好", "请问你是谁", "讲个故事", "Hello there", "1+1=?", "海螺"}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		var r chatResponse
		d.do("POST", "/v1/chat/completions", chatBody(p, map[string]any{"max_tokens": 24})).json(t, &r)
		want[i] = r.Choices[0].Message.Content
	}
	for round := range 2 {
		var wg sync.WaitGroup
		got := make([]string, len(prompts))
		for i, p := range prompts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var r chatResponse
				d.do("POST", "/v1/chat/completions", chatBody(p, map[string]any{"max_tokens": 24})).json(t, &r)
				if len(r.Choices) == 1 {
					got[i] = r.Choices[0].Message.Content
				}
			}()
		}
		wg.Wait()
		for i := range prompts {
			if got[i] != want[i] {
				t.Errorf("round %d, %q: concurrent %q, alone %q", round, prompts[i], got[i], want[i])
			}
		}
	}
}

// Chats are rendered exactly as fine-tuning renders them (internal/dataset), the Qwen
// default system prompt included.
func TestChatUsesTrainingTemplate(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	m := tinyQwen(t)
	tmpl, err := dataset.TemplateForModel(m.ChatTemplate(), m.Arch())
	if err != nil {
		t.Fatal(err)
	}
	conv := dataset.Conversation{Messages: []dataset.Message{{Role: "user", Content: "请问你是谁"}}}
	want, err := tmpl.EncodePrompt(m, conv)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tmpl.RenderPrompt(conv), "You are Qwen") {
		t.Fatalf("not the Qwen template: %q", tmpl.RenderPrompt(conv))
	}
	var r chatResponse
	d.do("POST", "/v1/chat/completions", chatBody("请问你是谁", map[string]any{"max_tokens": 1})).json(t, &r)
	if r.Usage.PromptTokens != len(want) {
		t.Fatalf("prompt has %d tokens, the training template gives %d", r.Usage.PromptTokens, len(want))
	}
	// user text cannot smuggle in special tokens through a chat
	var inj chatResponse
	d.do("POST", "/v1/chat/completions", chatBody("<|im_end|>", map[string]any{"max_tokens": 1})).json(t, &inj)
	plain, _ := tmpl.EncodePrompt(m, dataset.Conversation{Messages: []dataset.Message{{Role: "user", Content: "<|im_end|>"}}})
	if inj.Usage.PromptTokens != len(plain) || len(plain) <= len(want)-3 {
		t.Fatalf("special-token text in a message: %d tokens, want %d", inj.Usage.PromptTokens, len(plain))
	}
}

// logprobs and top_logprobs: one entry per completion token, whose bytes spell the
// answer, the same whether streamed or not; without logprobs the field stays null.
func TestChatLogprobs(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	opts := map[string]any{"max_tokens": 12, "temperature": 0, "logprobs": true, "top_logprobs": 2}
	r := d.do("POST", "/v1/chat/completions", chatBody("你好", opts))
	var whole struct {
		Choices []struct {
			Message  chatResponseMessage
			Logprobs *chatLogprobs
		}
		Usage usage
	}
	r.json(t, &whole)
	lp := whole.Choices[0].Logprobs
	if r.status != 200 || lp == nil || len(lp.Content) != whole.Usage.CompletionTokens {
		t.Fatalf("%d: %s", r.status, r.body)
	}
	var spelled []byte
	for i, e := range lp.Content {
		for _, b := range e.Bytes {
			spelled = append(spelled, byte(b))
		}
		if e.Logprob > 0 || len(e.TopLogprobs) != 2 || e.TopLogprobs[0].Logprob != e.Logprob || e.TopLogprobs[1].Logprob > e.Logprob {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	if string(spelled) != whole.Choices[0].Message.Content {
		t.Fatalf("entries spell %q, the answer is %q", spelled, whole.Choices[0].Message.Content)
	}

	opts["stream"] = true
	resp := d.stream(context.Background(), "POST", "/v1/chat/completions", chatBody("你好", opts))
	defer resp.Body.Close()
	var streamed []logprobEntry
	for _, ev := range readSSE(t, resp.Body) {
		var c struct {
			Choices []struct{ Logprobs *chatLogprobs }
		}
		if ev.data == "[DONE]" || json.Unmarshal([]byte(ev.data), &c) != nil || len(c.Choices) == 0 || c.Choices[0].Logprobs == nil {
			continue
		}
		streamed = append(streamed, c.Choices[0].Logprobs.Content...)
	}
	if len(streamed) != len(lp.Content) {
		t.Fatalf("streamed %d entries, whole %d", len(streamed), len(lp.Content))
	}
	for i := range streamed {
		// the second request reuses the first one's cached prompt: equal up to rounding
		if streamed[i].Token != lp.Content[i].Token || math.Abs(float64(streamed[i].Logprob-lp.Content[i].Logprob)) > 1e-4 {
			t.Fatalf("entry %d: streamed %+v, whole %+v", i, streamed[i], lp.Content[i])
		}
	}

	r = d.do("POST", "/v1/chat/completions", chatBody("你好", map[string]any{"max_tokens": 2}))
	if !strings.Contains(string(r.body), `"logprobs":null`) {
		t.Fatalf("without logprobs: %s", r.body)
	}
}

// The legacy logprobs: a number of alternatives, and per token its text, log probability,
// alternatives and offset; the tokens spell the completion, streamed or not. With echo the
// prompt is scored too, as lm-evaluation-harness asks: its first token has no log
// probability, and the generated part is the same as without echo.
func TestCompletionLogprobs(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	type choice struct {
		Text     string
		Logprobs *completionLogprobs
	}
	ask := func(body map[string]any) (string, *completionLogprobs, usage) {
		t.Helper()
		var c struct {
			Choices []choice
			Usage   usage
		}
		r := d.do("POST", "/v1/completions", body)
		r.json(t, &c)
		if r.status != 200 || len(c.Choices) != 1 || c.Choices[0].Logprobs == nil {
			t.Fatalf("%d %s", r.status, r.body)
		}
		lp := c.Choices[0].Logprobs
		if n := len(lp.Tokens); len(lp.TokenLogprobs) != n || len(lp.TopLogprobs) != n || len(lp.TextOffset) != n {
			t.Fatalf("lists of different lengths: %s", r.body)
		}
		text := c.Choices[0].Text
		for i, tok := range lp.Tokens {
			if lp.TextOffset[i] > len(text) || !strings.HasPrefix(text[lp.TextOffset[i]:], tok) {
				t.Fatalf("token %d %q is not at offset %d of %q", i, tok, lp.TextOffset[i], text)
			}
		}
		if strings.Join(lp.Tokens, "") != text {
			t.Fatalf("tokens %q do not spell %q", lp.Tokens, text)
		}
		return text, lp, c.Usage
	}
	body := map[string]any{"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0, "ignore_eos": true, "logprobs": 3}
	text, lp, u := ask(body)
	if len(lp.Tokens) != u.CompletionTokens {
		t.Fatalf("%d entries for %d tokens", len(lp.Tokens), u.CompletionTokens)
	}
	for i, tok := range lp.Tokens {
		best := float32(math.Inf(-1))
		for _, v := range lp.TopLogprobs[i] {
			best = max(best, v)
		}
		// greedy: the chosen token is the most likely one
		if n := len(lp.TopLogprobs[i]); n == 0 || n > 3 || lp.TokenLogprobs[i] == nil || *lp.TokenLogprobs[i] > 0 || lp.TopLogprobs[i][tok] != best {
			t.Fatalf("token %d %q (%v): alternatives %v", i, tok, lp.TokenLogprobs[i], lp.TopLogprobs[i])
		}
	}

	body["echo"] = true
	etext, elp, eu := ask(body)
	n := eu.PromptTokens
	if etext != "Once upon a time"+text || len(elp.Tokens) != n+u.CompletionTokens || elp.TokenLogprobs[0] != nil || elp.TopLogprobs[0] != nil {
		t.Fatalf("echo: %q, %d entries for %d+%d tokens, first %v %v", etext, len(elp.Tokens), n, u.CompletionTokens, elp.TokenLogprobs[0], elp.TopLogprobs[0])
	}
	for i := 1; i < len(elp.Tokens); i++ {
		if v := elp.TokenLogprobs[i]; v == nil || *v > 0 || len(elp.TopLogprobs[i]) == 0 {
			t.Fatalf("echo: entry %d: %v %v", i, v, elp.TopLogprobs[i])
		}
		if k := i - n; k >= 0 && (elp.Tokens[i] != lp.Tokens[k] || math.Abs(float64(*elp.TokenLogprobs[i]-*lp.TokenLogprobs[k])) > 1e-3) {
			t.Fatalf("echo: generated entry %d %q %v, without echo %q %v", k, elp.Tokens[i], *elp.TokenLogprobs[i], lp.Tokens[k], *lp.TokenLogprobs[k])
		}
	}

	// max_tokens 0 with echo scores the prompt alone.
	body["max_tokens"] = 0
	stext, slp, su := ask(body)
	if stext != "Once upon a time" || su.CompletionTokens != 0 || !slices.Equal(slp.Tokens, elp.Tokens[:n]) {
		t.Fatalf("score only: %q, %d generated, tokens %q", stext, su.CompletionTokens, slp.Tokens)
	}
	for i := 1; i < n; i++ {
		if math.Abs(float64(*slp.TokenLogprobs[i]-*elp.TokenLogprobs[i])) > 1e-3 {
			t.Fatalf("score only: entry %d %v, with generation %v", i, *slp.TokenLogprobs[i], *elp.TokenLogprobs[i])
		}
	}
	body["max_tokens"] = 10

	// Streamed, with and without echo: the same entries, the offsets running on across chunks.
	for _, echo := range []bool{false, true} {
		body["stream"], body["echo"] = true, echo
		want := lp
		if echo {
			want = elp
		}
		resp := d.stream(context.Background(), "POST", "/v1/completions", body)
		var toks []string
		var offsets []int
		for _, ev := range readSSE(t, resp.Body) {
			var ch struct{ Choices []choice }
			if ev.data == "[DONE]" || json.Unmarshal([]byte(ev.data), &ch) != nil || len(ch.Choices) == 0 || ch.Choices[0].Logprobs == nil {
				continue
			}
			toks = append(toks, ch.Choices[0].Logprobs.Tokens...)
			offsets = append(offsets, ch.Choices[0].Logprobs.TextOffset...)
		}
		resp.Body.Close()
		if !slices.Equal(toks, want.Tokens) || !slices.Equal(offsets, want.TextOffset) {
			t.Fatalf("echo %v: streamed %q at %v, whole %q at %v", echo, toks, offsets, want.Tokens, want.TextOffset)
		}
	}
}
