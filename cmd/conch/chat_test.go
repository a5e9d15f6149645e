package main

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
)

// conchIn runs the command line in a child with stdin, returning stdout and stderr.
func conchIn(t *testing.T, stdin string, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "CONCH_CLI_ARGS="+strings.Join(args, "\x1f"))
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\n%s%s", args, err, out.String(), errOut.String())
	}
	return out.String(), errOut.String()
}

// Without a model, chat talks to the built-in magic conch, which answers as trained.
func TestChatBuiltInConch(t *testing.T) {
	out, _ := conchIn(t, "请问你是谁\n/reset\n", "chat")
	if !strings.Contains(out, "我是蟹堡王的神奇海螺") || !strings.Contains(out, "(a new conversation)") {
		t.Fatalf("output: %q", out)
	}
}

// Each turn keeps the conversation and decodes only what is new.
func TestChatReusesEarlierTurns(t *testing.T) {
	model := testmodel.Cached(t, testmodel.Tiny("qwen2"))
	_, stderr := conchIn(t, "hello there\nand a second question\n/exit\nnever read\n", "chat", "-m", model, "-n", "6", "--stats")
	re := regexp.MustCompile(`prompt: (\d+) tokens \((\d+) reused\)`)
	turns := re.FindAllStringSubmatch(stderr, -1)
	if len(turns) != 2 {
		t.Fatalf("%d turns answered, want 2 (/exit ends the chat): %s", len(turns), stderr)
	}
	p1, _ := strconv.Atoi(turns[0][1])
	p2, _ := strconv.Atoi(turns[1][1])
	r2, _ := strconv.Atoi(turns[1][2])
	if turns[0][2] != "0" || p2 <= p1 || r2 < p1 {
		t.Fatalf("turn 1: %s tokens, %s reused; turn 2: %d tokens, %d reused (want the first turn's prompt reused)", turns[0][1], turns[0][2], p2, r2)
	}
}

// A model run that cannot start (a missing adapter, too many threads, no repetitions) ends
// with a message and status 1, having freed what it had opened: no panic.
func TestModelRunFailsCleanly(t *testing.T) {
	model := testmodel.Cached(t, testmodel.Tiny("qwen2"))
	for _, args := range [][]string{
		{"generate", "-m", model, "-p", "hi", "--lora", "/no/such/adapter.gguf"},
		{"generate", "-m", model, "-p", "hi", "-t", "100000"},
		{"chat", "-m", model, "--lora", "/no/such/adapter.gguf"},
		{"bench", "-m", model, "-r", "0"},
	} {
		out, code := conch(t, args...)
		if code != 1 || !strings.HasPrefix(out, "conch: ") || strings.Contains(out, "panic") {
			t.Errorf("%v: status %d, output %q", args, code, out)
		}
	}
}
