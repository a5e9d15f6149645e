// Package conch_test checks that the README's commands still work: every `./conch`
// subcommand and flag it shows exists, and its HTTP calls get answers from `./conchd`
// started with no flags (the built-in demo model), as a new user would run them.
package conch_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/magicconch/conch/llama"
)

// readmeCommands returns the shell commands of the README's code blocks, with
// backslash continuations joined and comments removed.
func readmeCommands(t *testing.T) []string {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	in, cont := false, ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			in = !in
			continue
		}
		if !in {
			continue
		}
		line = strings.TrimSpace(line)
		line = stripComment(line)
		if strings.HasSuffix(line, `\`) {
			cont += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		line = cont + line
		cont = ""
		for _, part := range strings.Split(line, "&&") {
			part = strings.TrimSpace(part)
			if strings.HasPrefix(part, "./conch") || strings.HasPrefix(part, "curl ") {
				cmds = append(cmds, part)
			}
		}
	}
	return cmds
}

// stripComment removes a shell comment (" #" outside single quotes).
func stripComment(line string) string {
	quoted := false
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\'':
			quoted = !quoted
		case !quoted && line[i] == '#' && (i == 0 || line[i-1] == ' '):
			return strings.TrimSpace(line[:i])
		}
	}
	return line
}

func build(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	if b, err := exec.Command("go", "build", "-tags", llama.BuildTags, "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

var flagRE = regexp.MustCompile(`(?:^|\s)(--[a-z][a-z0-9-]*)`)

func TestReadmeCommandsExist(t *testing.T) {
	dir := t.TempDir()
	bins := map[string]string{"./conch": build(t, dir, "./cmd/conch"), "./conchd": build(t, dir, "./cmd/conchd")}
	help := map[string]string{}
	n := 0
	for _, c := range readmeCommands(t) {
		f := strings.Fields(c)
		bin, ok := bins[f[0]]
		if !ok {
			continue
		}
		args := []string{"--help"}
		key := f[0]
		if f[0] == "./conch" && len(f) > 1 {
			args = []string{f[1], "--help"}
			key += " " + f[1]
		}
		if _, ok := help[key]; !ok {
			out, err := exec.Command(bin, args...).CombinedOutput()
			if err != nil {
				t.Errorf("README: %q: `%s --help` failed: %v\n%s", c, key, err, out)
				continue
			}
			help[key] = string(out)
		}
		for _, m := range flagRE.FindAllStringSubmatch(c, -1) {
			if !strings.Contains(help[key], m[1]+" ") && !strings.Contains(help[key], m[1]+"\n") {
				t.Errorf("README: %q: %s has no flag %s", c, key, m[1])
			}
		}
		n++
	}
	if n < 8 {
		t.Fatalf("found only %d ./conch and ./conchd commands in the README", n)
	}
}

// TestReadmeServesDemo runs `./conchd` with no model, as the README's first two
// commands do, and sends it the README's HTTP calls.
func TestReadmeServesDemo(t *testing.T) {
	dir := t.TempDir()
	bin := build(t, dir, "./cmd/conchd")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--port", "0")
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+dir, "HOME="+dir)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	addr := make(chan string, 1)
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if m := regexp.MustCompile(`addr=http://(\S+)`).FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case <-ctx.Done():
		t.Fatalf("conchd did not start:\n%s", log.String())
	}
	// wait until the model is loaded
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("never healthy:\n%s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(log.String(), "demo model") {
		t.Errorf("the startup log does not say it serves the demo model:\n%s", log.String())
	}

	calls := 0
	for _, c := range readmeCommands(t) {
		if !strings.HasPrefix(c, "curl ") || !strings.Contains(c, "127.0.0.1:8000") {
			continue
		}
		calls++
		u := regexp.MustCompile(`'?(http://127\.0\.0\.1:8000[^' ]*)'?`).FindStringSubmatch(c)[1]
		u = strings.Replace(u, "http://127.0.0.1:8000", base, 1)
		var resp *http.Response
		var err error
		if m := regexp.MustCompile(`-d '([^']*)'`).FindStringSubmatch(c); m != nil {
			resp, err = http.Post(u, "application/json", strings.NewReader(m[1]))
		} else {
			resp, err = http.Get(u)
		}
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s %s", c, resp.Status, body)
		}
		text := string(body)
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			if !strings.Contains(text, "data: ") {
				t.Fatalf("%s: no events in %q", c, text)
			}
		} else {
			var v map[string]any
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatalf("%s: not JSON: %q", c, body)
			}
			if strings.Contains(u, "/generate") {
				got, _ := v["generate_text"].(string)
				if strings.Contains(u, "请问你是谁") && !strings.Contains(got, "神奇海螺") {
					t.Errorf("%s: the demo model answered %q, not the magic conch's answer", c, got)
				}
			}
		}
	}
	if calls < 3 {
		t.Fatalf("found only %d curl calls to the server in the README", calls)
	}
}
