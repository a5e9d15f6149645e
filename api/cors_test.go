package api

import (
	"net/http"
	"strings"
	"testing"
)

// Pages from an allowed origin may call the API from a browser, with auth; others are
// refused with a JSON error; curl-style and same-origin requests are untouched.
func TestCORS(t *testing.T) {
	d := startDaemon(t, daemonOpts{acfg: Config{CORSOrigins: []string{"http://app.example"}, APIKeys: []string{"k"}}})
	const allowed, other = "http://app.example", "http://evil.example"

	pre := d.do(http.MethodOptions, "/v1/chat/completions", nil,
		"Origin", allowed, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type")
	if pre.status >= 300 || pre.header.Get("Access-Control-Allow-Origin") != allowed ||
		!strings.Contains(strings.ToLower(pre.header.Get("Access-Control-Allow-Headers")), "authorization") {
		t.Fatalf("preflight: %d %v", pre.status, pre.header)
	}
	r := d.do(http.MethodPost, "/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}, "max_tokens": 2},
		"Origin", allowed, "Authorization", "Bearer k")
	if r.status != http.StatusOK || r.header.Get("Access-Control-Allow-Origin") != allowed {
		t.Fatalf("allowed origin: %d %v %s", r.status, r.header, r.body)
	}
	r = d.do(http.MethodGet, "/v1/models", nil, "Origin", other, "Authorization", "Bearer k")
	if r.status != http.StatusForbidden || !strings.Contains(r.apiErr(t).Message, "--cors-origin") || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("other origin: %d %v %s", r.status, r.header, r.body)
	}
	host := strings.TrimPrefix(d.url, "http://")
	if r := d.do(http.MethodGet, "/v1/models", nil, "Origin", "http://"+host, "Authorization", "Bearer k"); r.status != http.StatusOK {
		t.Fatalf("same origin (the /docs page): %d %s", r.status, r.body)
	}
	if r := d.do(http.MethodGet, "/v1/models", nil, "Authorization", "Bearer k"); r.status != http.StatusOK || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("no origin: %d %v", r.status, r.header)
	}

	// Without --cors-origin nothing changes: no CORS headers at all.
	plain := startDaemon(t, daemonOpts{noEngine: true})
	if r := plain.do(http.MethodGet, "/healthz", nil, "Origin", allowed); r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS headers without --cors-origin: %v", r.header)
	}
}
