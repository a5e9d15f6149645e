package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
)

func settingsFor(t *testing.T, args ...string) (settings, error) {
	t.Helper()
	cmd := newCommand(nil)
	if err := cmd.Flags().Parse(args); err != nil {
		t.Fatal(err)
	}
	return loadSettings(viper.New(), cmd.Flags())
}

// Flags win over CONCH_* variables, which win over the YAML file, which wins over defaults.
func TestSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "conch.yaml")
	os.WriteFile(cfg, []byte(`model: from-file.gguf
port: 9001
parallel: 3
ctx-size: 1024
queue: 7
api-key: [k1, k2]
lora:
  - a=/x/a.gguf:0.5
shutdown-timeout: 5s
max-body: 2MiB
`), 0o644)
	t.Setenv("CONCH_PORT", "9002")
	t.Setenv("CONCH_CTX_SIZE", "2048")
	st, err := settingsFor(t, "--config", cfg, "--port", "9003")
	if err != nil {
		t.Fatal(err)
	}
	want := settings{
		Model: "from-file.gguf", Loras: []string{"a=/x/a.gguf:0.5"}, ModelName: "conch", Host: "127.0.0.1",
		Port: 9003, Parallel: 3, CtxSize: 2048, BatchSize: 512, PrefillChunk: 128, GPULayers: -1, FlashAttn: true, Queue: 7,
		APIKeys: []string{"k1", "k2"}, MaxBody: 2 << 20, ShutdownTimeout: 5 * time.Second, LogLevel: "info",
	}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("got  %+v\nwant %+v", st, want)
	}
	// environment lists are comma-separated
	t.Setenv("CONCH_API_KEY", "e1,e2")
	if st, _ := settingsFor(t); !reflect.DeepEqual(st.APIKeys, []string{"e1", "e2"}) || st.Port != 9002 {
		t.Fatalf("env: %+v", st)
	}
}

func TestSettingsErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("modle: x.gguf\n"), 0o644)
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(broken, []byte("model: [\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", bad}, `unknown setting "modle"`},
		{[]string{"--config", broken}, "broken.yaml"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
		{[]string{"--parallel", "0"}, "--parallel"},
		{[]string{"--ctx-size", "8"}, "--ctx-size"},
		{[]string{"--batch-size", "2", "--parallel", "4"}, "--batch-size"},
		{[]string{"--max-body", "lots"}, "--max-body"},
		{[]string{"--prefill-chunk", "0"}, "--prefill-chunk"},
		{[]string{"--port", "70000"}, "--port"},
	} {
		_, err := settingsFor(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one mentioning %q", c.args, err, c.want)
		}
	}
}

func TestParseLora(t *testing.T) {
	for _, c := range []struct {
		in   string
		want loraSpec
		err  bool
	}{
		{"sales=/m/sales.gguf", loraSpec{"sales", "/m/sales.gguf", 1}, false},
		{"sales=/m/sales.gguf:0.5", loraSpec{"sales", "/m/sales.gguf", 0.5}, false},
		{"/m/tone.gguf:2", loraSpec{"tone", "/m/tone.gguf", 2}, false},
		{"c:/odd:path.gguf", loraSpec{"odd:path", "c:/odd:path.gguf", 1}, false},
		{"name=", loraSpec{}, true},
		{"", loraSpec{}, true},
	} {
		got, err := parseLora(c.in)
		if (err != nil) != c.err || !c.err && got != c.want {
			t.Errorf("%q: %+v %v, want %+v", c.in, got, err, c.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "512KiB": 512 << 10, "1MiB": 1 << 20, "2 MB": 2e6, "10B": 10} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("%q: %d %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x", "-1", "1.5MiB", "0"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
