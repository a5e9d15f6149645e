package api

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// ollamaErr decodes Ollama's error answer: {"error": "..."}.
func (r reply) ollamaErr(t testing.TB) string {
	t.Helper()
	var b struct{ Error string }
	r.json(t, &b)
	if b.Error == "" {
		t.Fatalf("status %d: not an Ollama error: %s", r.status, r.body)
	}
	return b.Error
}

// Ollama's /api/generate and /api/chat answer what /generate and /v1/chat/completions do,
// in Ollama's shapes: one object, or JSON lines by default ending with the counts.
func TestOllamaGenerateAndChat(t *testing.T) {
	d := startDaemon(t, daemonOpts{acfg: Config{ModelName: "conch"}})
	var want generateResponse
	d.get("/generate", greedy("你好", "8")).json(t, &want)

	body := map[string]any{"model": "conch:latest", "prompt": "你好", "stream": false, "options": map[string]any{"temperature": 0, "num_predict": 8}}
	var one ollamaResponse
	r := d.do("POST", "/api/generate", body)
	r.json(t, &one)
	if r.status != 200 || one.Response == nil || *one.Response != want.GenerateText || !one.Done || one.DoneReason != "length" ||
		one.EvalCount != 8 || one.PromptEvalCount != want.Usage.PromptTokens || one.Model != "conch" || one.TotalDuration <= 0 {
		t.Fatalf("generate: %d %s, want text %q", r.status, r.body, want.GenerateText)
	}

	delete(body, "stream") // Ollama streams unless told not to
	resp := d.stream(context.Background(), "POST", "/api/generate", body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("content type %q", ct)
	}
	var text strings.Builder
	var lines []ollamaResponse
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var l ollamaResponse
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
		if l.Response != nil {
			text.WriteString(*l.Response)
		}
	}
	resp.Body.Close()
	end := lines[len(lines)-1]
	if len(lines) < 3 || text.String() != want.GenerateText || !end.Done || end.EvalCount != 8 || lines[0].Done {
		t.Fatalf("streamed %d lines spelling %q (want %q), last %+v", len(lines), text.String(), want.GenerateText, end)
	}

	// /api/chat against the OpenAI chat endpoint
	var oc chatResponse
	d.do("POST", "/v1/chat/completions", chatBody("请问你是谁", map[string]any{"max_tokens": 6})).json(t, &oc)
	var chat ollamaResponse
	d.do("POST", "/api/chat", map[string]any{"model": "conch", "stream": false, "messages": []map[string]any{{"role": "user", "content": "请问你是谁"}},
		"options": map[string]any{"temperature": 0, "num_predict": 6}}).json(t, &chat)
	if chat.Message == nil || chat.Message.Role != "assistant" || chat.Message.Content != oc.Choices[0].Message.Content || !chat.Done {
		t.Fatalf("chat %+v, OpenAI chat %q", chat, oc.Choices[0].Message.Content)
	}

	// A request without a prompt only loads the model, as in Ollama.
	var load ollamaResponse
	d.do("POST", "/api/generate", map[string]any{"model": "conch"}).json(t, &load)
	if !load.Done || load.DoneReason != "load" {
		t.Fatalf("load: %+v", load)
	}

	var tags struct{ Models []ollamaModel }
	d.get("/api/tags", nil).json(t, &tags)
	if len(tags.Models) != 1 || tags.Models[0].Name != "conch" || tags.Models[0].Details.Family != "qwen2" ||
		tags.Models[0].Details.Format != "gguf" || tags.Models[0].Size <= 0 || tags.Models[0].Details.ParameterSize == "" {
		t.Fatalf("tags %+v", tags)
	}
}

// Bad Ollama requests get a 4xx with Ollama's {"error": "..."}, naming what is wrong.
func TestOllamaBadRequests(t *testing.T) {
	d := startDaemon(t, daemonOpts{acfg: Config{ModelName: "conch", APIKeys: []string{"sk-x"}}})
	key := []string{"Authorization", "Bearer sk-x"}
	cases := []struct {
		path, body string
		status     int
		says       string
	}{
		{"/api/generate", `{"prompt":"hi","images":["aGk="]}`, 400, "images"},
		{"/api/generate", `{"prompt":"hi","format":"json"}`, 400, "format"},
		{"/api/generate", `{"prompt":"hi","model":"llama3"}`, 404, "llama3"},
		{"/api/generate", `{"prompt":"hi","options":{"temperature":9}}`, 400, "temperature"},
		{"/api/generate", `{"prompt":`, 400, ""},
		{"/api/chat", `{"messages":[{"role":"robot","content":"x"}]}`, 400, "role"},
		{"/api/chat", `{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}`, 400, "tools"},
	}
	for _, c := range cases {
		r := d.do("POST", c.path, c.body, key...)
		if r.status != c.status || !strings.Contains(r.ollamaErr(t), c.says) {
			t.Errorf("%s %s: %d %s", c.path, c.body, r.status, r.body)
		}
	}
	if r := d.do("POST", "/api/generate", `{"prompt":"hi"}`); r.status != 401 || r.ollamaErr(t) == "" {
		t.Errorf("without the key: %d %s", r.status, r.body)
	}
}

// Settings a request leaves out get Ollama's defaults, not OpenAI's; given ones are kept.
func TestOllamaDefaults(t *testing.T) {
	var r ollamaCommon
	o, aerr := r.options()
	if aerr != nil || *o.Temperature != 0.8 || *o.TopK != 40 || *o.TopP != 0.9 || o.MaxTokens != nil || o.Seed != nil {
		t.Fatalf("defaults %+v %v", o, aerr)
	}
	if err := json.Unmarshal([]byte(`{"options":{"temperature":0,"top_k":5,"top_p":1,"num_predict":7,"seed":-1}}`), &r); err != nil {
		t.Fatal(err)
	}
	if o, _ = r.options(); *o.Temperature != 0 || *o.TopK != 5 || *o.TopP != 1 || *o.MaxTokens != 7 || o.Seed != nil {
		t.Fatalf("given %+v", o)
	}
}
