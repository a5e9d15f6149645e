package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/magicconch/conch/internal/engine"
	"github.com/magicconch/conch/internal/testmodel"
	"github.com/magicconch/conch/llama"
)

// Models are loaded once per test binary; every test gets its own engine and server.
var (
	loadOnce sync.Once
	qwenPath string
	qwen     *llama.Model
	loadErr  error
)

func tinyQwen(t testing.TB) *llama.Model {
	t.Helper()
	loadOnce.Do(func() {
		llama.SetLogLevel(4)
		if qwenPath, loadErr = testmodel.Ensure(testmodel.Tiny("qwen2")); loadErr == nil {
			qwen, loadErr = llama.LoadModel(qwenPath, llama.ModelParams{})
		}
	})
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return qwen
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// daemon is a real server on 127.0.0.1 with a real engine.
type daemon struct {
	t      *testing.T
	url    string
	srv    *Server
	eng    *engine.Engine
	client *http.Client
}

type daemonOpts struct {
	ecfg     engine.Config
	acfg     Config
	noEngine bool
}

func startDaemon(t *testing.T, o daemonOpts) *daemon {
	t.Helper()
	if o.ecfg.Model == nil {
		o.ecfg.Model = tinyQwen(t)
	}
	if o.ecfg.SlotCtx == 0 {
		o.ecfg.SlotCtx = 256
	}
	if o.ecfg.Parallel == 0 {
		o.ecfg.Parallel = 4
	}
	if o.ecfg.Threads == 0 {
		o.ecfg.Threads = 2
	}
	if o.acfg.Logger == nil {
		o.acfg.Logger = quietLog
	}
	if o.ecfg.Logger == nil {
		o.ecfg.Logger = quietLog
	}
	srv := New(o.acfg)
	o.ecfg.OnFirstToken, o.ecfg.OnToken, o.ecfg.OnStep = srv.ObserveFirstToken, srv.ObserveToken, srv.ObserveStep
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	d := &daemon{t: t, url: "http://" + ln.Addr().String(), srv: srv, client: &http.Client{Timeout: 60 * time.Second}}
	t.Cleanup(func() {
		hs.Close()
		if d.eng != nil {
			d.eng.Close()
		}
	})
	if !o.noEngine {
		e, err := engine.New(o.ecfg)
		if err != nil {
			t.Fatal(err)
		}
		d.eng = e
		srv.SetEngine(e)
	}
	return d
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("status %d, body %q: %v", r.status, r.body, err)
	}
}

// apiErr decodes an error answer and checks its shape.
func (r reply) apiErr(t testing.TB) apiError {
	t.Helper()
	var b struct{ Error *apiError }
	r.json(t, &b)
	if b.Error == nil || b.Error.Message == "" || b.Error.Type == "" {
		t.Fatalf("status %d: not an error body: %s", r.status, r.body)
	}
	return *b.Error
}

func (d *daemon) do(method, path string, body any, hdr ...string) reply {
	d.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, d.url+path, rd)
	if err != nil {
		d.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := d.client.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

func (d *daemon) get(path string, q url.Values, hdr ...string) reply {
	d.t.Helper()
	if q != nil {
		path += "?" + q.Encode()
	}
	return d.do("GET", path, nil, hdr...)
}

// event is one Server-Sent Event.
type event struct {
	name string
	data string
}

// readSSE parses an event stream strictly: every line is "event: x" or "data: x", every
// event ends with a blank line, nothing is left over.
func readSSE(t testing.TB, r io.Reader) []event {
	t.Helper()
	var evs []event
	var cur event
	open := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if !open {
				t.Fatalf("blank line outside an event")
			}
			evs = append(evs, cur)
			cur, open = event{}, false
		case strings.HasPrefix(line, "event: "):
			cur.name, open = line[len("event: "):], true
		case strings.HasPrefix(line, "data: "):
			if cur.data != "" {
				t.Fatalf("two data lines in one event")
			}
			cur.data, open = line[len("data: "):], true
		default:
			t.Fatalf("bad SSE line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if open {
		t.Fatalf("stream ended inside an event: %+v", cur)
	}
	return evs
}

// stream opens a streaming request and returns the response for incremental reading.
func (d *daemon) stream(ctx context.Context, method, path string, body any) *http.Response {
	d.t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.url+path, rd)
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	return resp
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// metric reads one sample from /metrics ("name{labels}" as Prometheus prints it).
func (d *daemon) metric(t testing.TB, sample string) float64 {
	t.Helper()
	r := d.get("/metrics", nil)
	for _, line := range strings.Split(string(r.body), "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

func timeout(t testing.TB) <-chan time.Time { return time.After(15 * time.Second) }
