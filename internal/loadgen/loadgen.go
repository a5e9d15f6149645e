// Package loadgen drives a running conchd over HTTP to measure serving speed: time to
// first token and tokens per second for one client and for several at once. It is a
// plain client of the OpenAI-compatible /v1/completions endpoint, streamed, so what it
// measures is what a caller sees.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config describes one load run.
type Config struct {
	URL       string        // base URL of the daemon, e.g. http://127.0.0.1:8000
	APIKey    string        // sent as a Bearer token when not empty
	Model     string        // model id ("" for the default)
	Prompt    string        // prompt text; each request gets a random number in front so no cache can answer it
	MaxTokens int           // tokens generated per request (end-of-text is ignored)
	Requests  int           // requests per concurrency level (at least the number of clients)
	MaxTime   time.Duration // no new request starts after this long at one level (0: no limit)
	Client    *http.Client
}

// Sample is one request's timings.
type Sample struct {
	PromptTokens int
	Tokens       int
	FirstToken   time.Duration // from sending the request to the first text
	Total        time.Duration // from sending the request to the end of the stream
}

// GenRate is the request's generation speed after its first token.
func (s Sample) GenRate() float64 {
	d := s.Total - s.FirstToken
	if s.Tokens < 2 || d <= 0 {
		return 0
	}
	return float64(s.Tokens-1) / d.Seconds()
}

// Level is the outcome of running with a number of concurrent clients.
type Level struct {
	Clients int
	Samples []Sample
	Wall    time.Duration // from the first request to the last answer
}

// Tokens is the total of generated tokens.
func (l Level) Tokens() int {
	n := 0
	for _, s := range l.Samples {
		n += s.Tokens
	}
	return n
}

// Throughput is generated tokens per second of wall time, all clients together.
func (l Level) Throughput() float64 {
	if l.Wall <= 0 {
		return 0
	}
	return float64(l.Tokens()) / l.Wall.Seconds()
}

// TTFT returns the q-quantile (0..1) of the time to first token.
func (l Level) TTFT(q float64) time.Duration {
	d := make([]time.Duration, len(l.Samples))
	for i, s := range l.Samples {
		d[i] = s.FirstToken
	}
	return quantile(d, q)
}

// GenRate is the median per-request generation speed (tokens/s after the first token).
func (l Level) GenRate() float64 {
	r := make([]float64, len(l.Samples))
	for i, s := range l.Samples {
		r[i] = s.GenRate()
	}
	sort.Float64s(r)
	if len(r) == 0 {
		return 0
	}
	return r[len(r)/2]
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(int(q*float64(len(d))), len(d)-1)]
}

// Run runs cfg.Requests requests with the given number of concurrent clients.
func Run(ctx context.Context, cfg Config, clients int) (Level, error) {
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if clients < 1 {
		return Level{}, errors.New("loadgen: clients must be at least 1")
	}
	n := max(cfg.Requests, clients)
	lv := Level{Clients: clients}
	base := rand.IntN(1_000_000) * 1000 // distinct prompts across runs too
	var (
		mu       sync.Mutex
		next     int
		firstErr error
	)
	start := time.Now()
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= n || firstErr != nil || ctx.Err() != nil || cfg.MaxTime > 0 && time.Since(start) > cfg.MaxTime {
			return 0, false
		}
		next++
		return next, true
	}
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				id, ok := take()
				if !ok {
					return
				}
				s, err := request(ctx, cfg, base+id)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					lv.Samples = append(lv.Samples, s)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	lv.Wall = time.Since(start)
	return lv, firstErr
}

type chunk struct {
	Choices []struct {
		Text string `json:"text"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// request runs one streamed completion and times it.
func request(ctx context.Context, cfg Config, id int) (Sample, error) {
	body, _ := json.Marshal(map[string]any{
		"model": cfg.Model, "prompt": fmt.Sprintf("%d. %s", id, cfg.Prompt), "max_tokens": cfg.MaxTokens,
		"temperature": 0, "ignore_eos": true, "stream": true, "stream_options": map[string]bool{"include_usage": true},
	})
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(cfg.URL, "/")+"/v1/completions", bytes.NewReader(body))
	if err != nil {
		return Sample{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
	}
	var s Sample
	start := time.Now()
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return s, fmt.Errorf("loadgen: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	done := false
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			break
		}
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return s, fmt.Errorf("loadgen: bad event %q: %w", data, err)
		}
		if c.Error != nil {
			return s, fmt.Errorf("loadgen: server error: %s", c.Error.Message)
		}
		if len(c.Choices) > 0 && c.Choices[0].Text != "" && s.FirstToken == 0 {
			s.FirstToken = time.Since(start)
		}
		if c.Usage != nil {
			s.PromptTokens, s.Tokens = c.Usage.PromptTokens, c.Usage.CompletionTokens
		}
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if !done {
		return s, errors.New("loadgen: stream ended without [DONE]")
	}
	s.Total = time.Since(start)
	if s.FirstToken == 0 {
		s.FirstToken = s.Total
	}
	return s, nil
}

// Engine is what the daemon's /metrics say about its decode steps.
type Engine struct {
	Steps       float64 // decode steps
	StepSeconds float64 // time spent in them
	StepTokens  float64 // tokens decoded in them
}

// Sub is the difference e - o.
func (e Engine) Sub(o Engine) Engine {
	return Engine{e.Steps - o.Steps, e.StepSeconds - o.StepSeconds, e.StepTokens - o.StepTokens}
}

// Scrape reads the decode-step counters from the daemon's /metrics.
func Scrape(ctx context.Context, cfg Config) (Engine, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(cfg.URL, "/")+"/metrics", nil)
	if err != nil {
		return Engine{}, err
	}
	c := cfg.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return Engine{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Engine{}, fmt.Errorf("loadgen: /metrics: %s", resp.Status)
	}
	var e Engine
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case "conch_decode_step_seconds_count":
			dst = &e.Steps
		case "conch_decode_step_seconds_sum":
			dst = &e.StepSeconds
		case "conch_decode_step_tokens_sum":
			dst = &e.StepTokens
		default:
			continue
		}
		fmt.Sscan(val, dst)
	}
	return e, sc.Err()
}
