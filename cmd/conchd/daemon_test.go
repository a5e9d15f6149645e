package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

func tinyModel(t *testing.T) string {
	t.Helper()
	return testmodel.Cached(t, testmodel.Tiny("qwen2"))
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// conchdBinary builds this command once per test run (the go command inherits the cgo
// settings scripts/go gives the test).
func conchdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "conchd-test")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "conchd")
		out, err := exec.Command("go", "build", "-tags", llama.BuildTags, "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New("go build: " + string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// process is a running conchd binary.
type process struct {
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer
	mu   *sync.Mutex
	exit chan error
}

func startBinary(t *testing.T, args ...string) *process {
	t.Helper()
	cmd := exec.Command(conchdBinary(t), append([]string{"--port", "0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, logs: &bytes.Buffer{}, mu: &sync.Mutex{}, exit: make(chan error, 1)}
	addr := make(chan string, 1)
	re := regexp.MustCompile(`msg=listening addr=(http://\S+)`)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		p.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	select {
	case p.url = <-addr:
	case err := <-p.exit:
		t.Fatalf("conchd exited: %v\n%s", err, p.log())
	case <-time.After(20 * time.Second):
		t.Fatalf("conchd did not start listening\n%s", p.log())
	}
	waitHealthy(t, p.url)
	return p
}

func (p *process) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

func waitHealthy(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			if resp.StatusCode != 503 {
				t.Fatalf("healthz: %d", resp.StatusCode)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("never healthy")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func post(t *testing.T, url, body string, hdr ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// SIGTERM: the daemon stops accepting, lets the in-flight stream finish, exits 0.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	p := startBinary(t, "--model", tinyModel(t), "--ctx-size", "512", "--threads", "2", "--shutdown-timeout", "20s")
	resp, err := http.Get(p.url + "/generate?prompt=hi&stream=true&ignore_eos=true&temperature=0&max_tokens=200")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if line, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q %v", line, err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rd)
	if err != nil {
		t.Fatalf("stream broken by shutdown: %v", err)
	}
	if !strings.Contains(string(rest), "event: done") || !strings.Contains(string(rest), `"completion_tokens":200`) {
		t.Fatalf("stream did not finish: ...%s", tail(string(rest), 300))
	}
	select {
	case err := <-p.exit:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, p.log())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
	if _, err := http.Get(p.url + "/healthz"); err == nil {
		t.Fatal("still accepting connections after exit")
	}
}

// When in-flight requests outlast --shutdown-timeout they are cut off (with an error
// event), and the daemon still exits cleanly.
func TestShutdownDeadline(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	cmd := newCommand(func(a string) { addr <- a })
	cmd.SetArgs([]string{"--model", tinyModel(t), "--port", "0", "--ctx-size", "100000", "--parallel", "1",
		"--threads", "2", "--shutdown-timeout", "300ms", "--log-level", "error"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	url := "http://" + <-addr
	waitHealthy(t, url)
	resp, err := http.Get(url + "/generate?prompt=hi&stream=true&ignore_eos=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	rd.ReadString('\n')
	start := time.Now()
	stop()
	rest, _ := io.ReadAll(rd)
	if !strings.Contains(string(rest), "event: error") || !strings.Contains(string(rest), "shut down") {
		t.Fatalf("stream end: ...%s", tail(string(rest), 300))
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return")
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Fatalf("shutdown took %v with a 300ms timeout", d)
	}
}

func TestNoModel(t *testing.T) {
	saved := defaultModel
	t.Cleanup(func() { defaultModel = saved })
	defaultModel = nil
	cmd := newCommand(nil)
	cmd.SetArgs([]string{"--port", "0"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "no --model given") {
		t.Fatalf("error %v", err)
	}
	cmd = newCommand(nil)
	cmd.SetArgs([]string{"--port", "0", "--model", filepath.Join(t.TempDir(), "missing.gguf")})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "missing.gguf") {
		t.Fatalf("error %v", err)
	}
	// With the hook set, no --model serves what it supplies.
	defaultModel = func() (string, []string, error) { return tinyModel(t), nil, nil }
	ctx, stop := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	cmd = newCommand(func(a string) { addr <- a })
	cmd.SetArgs([]string{"--port", "0", "--ctx-size", "128", "--log-level", "error"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	waitHealthy(t, "http://"+<-addr)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The official OpenAI Node client, unchanged, streams a chat completion from conchd and
// scores a prompt with the legacy completions.
const openaiNodeVersion = "6.30.1"

const openaiScript = `
import OpenAI from "openai";
const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, maxRetries: 0 });
const out = {};
const models = await client.models.list();
out.models = models.data.map((m) => m.id);
const stream = await client.chat.completions.create({
  model: "conch", messages: [{ role: "user", content: "请问你是谁" }],
  stream: true, max_tokens: 24, temperature: 0, stream_options: { include_usage: true },
});
out.text = ""; out.chunks = 0;
for await (const chunk of stream) {
  out.chunks++;
  if (chunk.usage) out.usage = chunk.usage;
  const c = chunk.choices[0];
  if (!c) continue;
  out.text += c.delta?.content ?? "";
  if (c.finish_reason) out.finish = c.finish_reason;
}
const whole = await client.chat.completions.create({
  model: "conch", messages: [{ role: "user", content: "请问你是谁" }], max_tokens: 24, temperature: 0,
});
out.whole = whole.choices[0].message.content;
// A prompt scored the way lm-evaluation-harness asks: echo, logprobs, nothing generated.
const scored = await client.completions.create({
  model: "conch", prompt: "The magic conch says", echo: true, logprobs: 1, max_tokens: 0, temperature: 0,
});
const lp = scored.choices[0].logprobs;
out.scored = { text: scored.choices[0].text, tokens: lp.tokens.join(""), n: lp.token_logprobs.length,
  first: lp.token_logprobs[0], sum: lp.token_logprobs.slice(1).reduce((a, b) => a + b, 0) };
try {
  await client.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "x" }] });
} catch (e) { out.notFound = e.constructor.name + " " + e.status; }
try {
  await new OpenAI({ baseURL: process.env.BASE_URL, apiKey: "wrong", maxRetries: 0 }).models.list();
} catch (e) { out.badKey = e.constructor.name + " " + e.status; }
console.log(JSON.stringify(out));
`

// nodeScript installs an npm package once into the user's cache and writes script beside
// it; it returns node and the script's path. Without npm the test is skipped (CI installs it).
func nodeScript(t *testing.T, pkg, version, script string) (node, path string) {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not installed")
	}
	if node, err = exec.LookPath("node"); err != nil {
		t.Fatal("npm is installed but node is not")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "conch-test", pkg+"-node-"+version)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
		out, err := exec.Command(npm, "install", "--prefix", dir, "--no-audit", "--no-fund", pkg+"@"+version).CombinedOutput()
		if err != nil {
			t.Fatalf("npm install %s@%s: %v\n%s", pkg, version, err, out)
		}
	}
	path = filepath.Join(dir, "conchd-e2e.mjs")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return node, path
}

func TestOpenAINodeClient(t *testing.T) {
	node, script := nodeScript(t, "openai", openaiNodeVersion, openaiScript)
	p := startBinary(t, "--model", tinyModel(t), "--ctx-size", "512", "--threads", "2", "--api-key", "sk-test")
	cmd := exec.Command(node, script)
	cmd.Env = append(os.Environ(), "BASE_URL="+p.url+"/v1", "API_KEY=sk-test")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s\n%s", err, out, p.log())
	}
	var res struct {
		Models   []string
		Text     string
		Chunks   int
		Finish   string
		Usage    struct{ Prompt_tokens, Completion_tokens, Total_tokens int }
		Whole    string
		NotFound string
		BadKey   string
		Scored   struct {
			Text, Tokens string
			N            int
			First        *float64
			Sum          float64
		}
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Logf("node client: %s", out)
	if len(res.Models) != 1 || res.Models[0] != "conch" {
		t.Errorf("models %v", res.Models)
	}
	if res.Text == "" || res.Text != res.Whole || res.Chunks < 3 {
		t.Errorf("streamed %q in %d chunks, whole %q", res.Text, res.Chunks, res.Whole)
	}
	if res.Finish != "stop" && res.Finish != "length" || res.Usage.Completion_tokens == 0 {
		t.Errorf("finish %q usage %+v", res.Finish, res.Usage)
	}
	if sc := res.Scored; sc.Text != "The magic conch says" || sc.Tokens != sc.Text || sc.N < 3 || sc.First != nil || !(sc.Sum < 0) {
		t.Errorf("scored prompt: %+v", sc)
	}
	if res.NotFound != "NotFoundError 404" || res.BadKey != "AuthenticationError 401" {
		t.Errorf("errors: %q %q", res.NotFound, res.BadKey)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// The official Ollama JavaScript client, unchanged, lists the models, streams a chat and
// generates from conchd, and sees conchd's errors as Ollama's.
const ollamaNodeVersion = "0.6.4"

const ollamaScript = `
import { Ollama } from "ollama";
const client = new Ollama({ host: process.env.HOST, headers: { Authorization: "Bearer " + process.env.API_KEY } });
const out = {};
out.models = (await client.list()).models.map((m) => m.name);
const stream = await client.chat({
  model: "conch", messages: [{ role: "user", content: "请问你是谁" }], stream: true,
  options: { temperature: 0, num_predict: 24 },
});
out.text = ""; out.parts = 0;
for await (const part of stream) {
  out.parts++;
  out.text += part.message.content;
  if (part.done) { out.reason = part.done_reason; out.evalCount = part.eval_count; }
}
const whole = await client.chat({
  model: "conch:latest", messages: [{ role: "user", content: "请问你是谁" }], options: { temperature: 0, num_predict: 24 },
});
out.whole = whole.message.content;
out.generated = (await client.generate({ model: "conch", prompt: "请问你是谁", options: { temperature: 0, num_predict: 24 } })).response;
try {
  await client.chat({ model: "nope", messages: [{ role: "user", content: "x" }] });
} catch (e) { out.notFound = e.status_code + " " + e.error; }
console.log(JSON.stringify(out));
`

func TestOllamaNodeClient(t *testing.T) {
	node, script := nodeScript(t, "ollama", ollamaNodeVersion, ollamaScript)
	p := startBinary(t, "--model", tinyModel(t), "--ctx-size", "512", "--threads", "2", "--api-key", "sk-test")
	cmd := exec.Command(node, script)
	cmd.Env = append(os.Environ(), "HOST="+p.url, "API_KEY=sk-test")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s\n%s", err, out, p.log())
	}
	var res struct {
		Models                 []string
		Text, Whole, Generated string
		Parts, EvalCount       int
		Reason, NotFound       string
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Logf("ollama client: %s", out)
	if len(res.Models) != 1 || res.Models[0] != "conch" {
		t.Errorf("models %v", res.Models)
	}
	if res.Text == "" || res.Text != res.Whole || res.Text != res.Generated || res.Parts < 3 || res.EvalCount == 0 || res.Reason == "" {
		t.Errorf("streamed %q in %d parts (%s, %d tokens), whole %q, generated %q", res.Text, res.Parts, res.Reason, res.EvalCount, res.Whole, res.Generated)
	}
	if !strings.HasPrefix(res.NotFound, "404 ") || !strings.Contains(res.NotFound, "nope") {
		t.Errorf("unknown model: %q", res.NotFound)
	}
}
