package train

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
)

func magicConchDir(t *testing.T) string {
	t.Helper()
	d, err := testmodel.SharedData()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(d, "magic_conch")
}

// testConfig trains a LoRA on the magic-conch dataset into a fresh folder.
func testConfig(t *testing.T, model string) Config {
	c := Defaults()
	c.Model = model
	c.DatasetDir = magicConchDir(t)
	c.Dataset = "magic_conch"
	c.OutputDir = filepath.Join(t.TempDir(), "run")
	c.Threads = 2
	c.LoggingSteps = 1
	c.SaveSteps = 0
	return c
}

// cancelAt is a progress writer that cancels a run when a line containing match is
// written: the real Ctrl-C path, at a step chosen by the test.
type cancelAt struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	match  string
	cancel context.CancelFunc
}

func (c *cancelAt) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if c.match != "" && strings.Contains(c.buf.String(), c.match) {
		c.cancel()
		c.match = ""
	}
	return len(p), nil
}

// readLog parses trainer_log.jsonl.
func readLog(t *testing.T, out string) []LogEntry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, logFile))
	if err != nil {
		t.Fatal(err)
	}
	var log []LogEntry
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e LogEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("%s line %d: %v: %q", logFile, i+1, err, line)
		}
		log = append(log, e)
	}
	return log
}
