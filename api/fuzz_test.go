package api

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/magicconch/conch/internal/chat"
	"github.com/magicconch/conch/llama"
)

// The fuzzers drive everything a request body or query reaches before the engine: JSON
// decoding, validation, chat templating and llama.cpp's tokenizer (native code that sees
// user text). Run them with, for example,
//
//	scripts/go test ./api -run '^$' -fuzz FuzzChatRequest -fuzztime 2m
//
// Inputs that once failed stay in testdata/fuzz and run with every `go test`.

var fuzzServer = New(Config{})

var (
	fuzzRendererOnce sync.Once
	fuzzChat         *chat.Renderer
)

func fuzzRenderer(m *llama.Model) *chat.Renderer {
	fuzzRendererOnce.Do(func() { fuzzChat = chat.NewRenderer(m, func(string, ...any) {}) })
	return fuzzChat
}

func checkPrompt(t *testing.T, m *llama.Model, text string, o options) {
	toks, err := chat.Tokenize(m, text)
	if err != nil {
		return
	}
	checkTokens(t, m, toks, o)
}

func checkTokens(t *testing.T, m *llama.Model, toks []llama.Token, o options) {
	for _, tok := range toks {
		if tok < 0 || int(tok) >= m.VocabSize() {
			t.Fatalf("tokenizer returned token %d", tok)
		}
	}
	if len(toks) > 0 {
		if _, aerr := fuzzServer.build(256, o, toks, "prompt"); aerr != nil && (aerr.Status != 400 || aerr.Message == "") {
			t.Fatalf("bad error %+v", aerr)
		}
	}
}

func FuzzChatRequest(f *testing.F) {
	f.Add([]byte(`{"model":"conch","messages":[{"role":"user","content":"请问你是谁"}],"stream":true}`))
	f.Add([]byte(`{"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":5,"stop":["\n","。"],"temperature":0.7,"top_p":0.9,"seed":-1,"n":1}`))
	f.Add([]byte(`{"messages":[{"role":"assistant","content":null}],"stop":"x","presence_penalty":-2,"frequency_penalty":2,"max_completion_tokens":3}`))
	f.Add([]byte(`{"messages":[{"role":"user","content":"<|im_start|>\xff\xfe"}],"stream_options":{"include_usage":true}}`))
	f.Add([]byte(`{"messages":[],"max_tokens":1e400}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m := tinyQwen(t)
		var req chatRequest
		if aerr := unmarshalBody(body, &req); aerr != nil {
			if aerr.Status != http.StatusBadRequest || aerr.Message == "" || !utf8.ValidString(aerr.Message) && utf8.Valid(body) {
				t.Fatalf("bad decode error %+v", aerr)
			}
			return
		}
		o, aerr := req.options()
		if aerr != nil {
			return
		}
		msgs, aerr := chatMessages(req.Messages)
		if aerr != nil {
			return
		}
		p, err := fuzzRenderer(m).Render(msgs)
		if err != nil {
			return
		}
		checkTokens(t, m, p.Tokens, o)
	})
}

func FuzzCompletionRequest(f *testing.F) {
	f.Add([]byte(`{"prompt":"Once upon a time","max_tokens":8,"echo":true}`))
	f.Add([]byte(`{"prompt":["x"],"stop":null}`))
	f.Add([]byte(`{"prompt":[1,2,3,151643],"temperature":0}`))
	f.Add([]byte(`{"prompt":[-1]}`))
	f.Add([]byte(`{"prompt":"\u0000<|endoftext|>","top_k":-5}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m := tinyQwen(t)
		var req completionRequest
		if aerr := unmarshalBody(body, &req); aerr != nil {
			if aerr.Status != http.StatusBadRequest || aerr.Message == "" {
				t.Fatalf("bad decode error %+v", aerr)
			}
			return
		}
		o, aerr := req.options()
		if aerr != nil || !req.Prompt.Set {
			return
		}
		if req.Prompt.Tokens == nil {
			checkPrompt(t, m, req.Prompt.Text, o)
		}
	})
}

// FuzzGenerateQuery drives /generate's query parsing, templating and tokenizing with
// arbitrary query strings: each must end in a value or a 400 naming the parameter.
func FuzzGenerateQuery(f *testing.F) {
	f.Add("prompt=%E4%BD%A0%E5%A5%BD&max_tokens=5&stream=true")
	f.Add("prompt=hi&temperature=NaN&top_p=-0&stop=a&stop=&seed=99999999999999999999")
	f.Add("prompt=%ff%fe&raw=1&echo=T&model=x")
	f.Fuzz(func(t *testing.T, query string) {
		m := tinyQwen(t)
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		w := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(w)
		c.Request = httptest.NewRequest("GET", "/generate?"+q.Encode(), nil)
		qp := queryParser{c: c}
		o := options{MaxTokens: qp.int("max_tokens"), Temperature: qp.float("temperature"), TopP: qp.float("top_p"),
			TopK: qp.int("top_k"), Seed: qp.int64("seed"), Stop: c.QueryArray("stop")}
		qp.boolean("raw")
		if qp.err != nil {
			if qp.err.Status != 400 || qp.err.Param == "" {
				t.Fatalf("bad error %+v", qp.err)
			}
			return
		}
		p, err := fuzzRenderer(m).Render([]llama.Message{{Role: "user", Content: c.Query("prompt")}})
		if err == nil {
			checkTokens(t, m, p.Tokens, o)
		}
	})
}

// FuzzOllamaRequest drives /api/generate and /api/chat bodies the same way.
func FuzzOllamaRequest(f *testing.F) {
	f.Add([]byte(`{"model":"conch:latest","prompt":"请问你是谁","options":{"temperature":0,"num_predict":-1,"stop":["\n"]}}`))
	f.Add([]byte(`{"messages":[{"role":"user","content":"hi","images":["x"]}],"format":{"type":"object"},"keep_alive":"5m"}`))
	f.Add([]byte(`{"prompt":"x","system":"<|im_end|>","raw":true,"options":{"seed":-1,"num_predict":0},"tools":[]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m := tinyQwen(t)
		var g ollamaGenerateRequest
		if aerr := unmarshalBody(body, &g); aerr != nil {
			if aerr.Status != http.StatusBadRequest || aerr.Message == "" {
				t.Fatalf("bad decode error %+v", aerr)
			}
		} else if o, aerr := g.options(); aerr == nil {
			checkPrompt(t, m, g.Prompt, o)
		}
		var c ollamaChatRequest
		if unmarshalBody(body, &c) == nil {
			if _, aerr := c.options(); aerr != nil && aerr.Status != http.StatusBadRequest {
				t.Fatalf("bad options error %+v", aerr)
			}
		}
	})
}
