package outfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func entries(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestCommitAbortAndPending(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "m.gguf")

	f, err := Create(final, false, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(f.Tmp), ".m.gguf.") {
		t.Fatalf("temporary file %s is not hidden beside the output", f.Tmp)
	}
	os.WriteFile(f.Tmp, []byte("data"), 0o644)
	if n, err := f.Commit(); err != nil || n != 4 {
		t.Fatalf("commit: %d bytes, %v", n, err)
	}
	f.Abort() // after a commit: nothing to do
	if got := entries(t, dir); len(got) != 1 || got[0] != "m.gguf" {
		t.Fatalf("after commit: %v", got)
	}

	if _, err := Create(final, false, 1); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("existing output accepted without force: %v", err)
	}
	if _, err := Create(dir, true, 1); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("a directory accepted as output: %v", err)
	}
	if _, err := Create(filepath.Join(dir, "big.gguf"), false, 1<<62); err == nil || !strings.Contains(err.Error(), "not enough disk space") {
		t.Fatalf("an impossible size accepted: %v", err)
	}

	// Another writer wins between Create and Commit: without force, ours is refused.
	g, err := Create(filepath.Join(dir, "n.gguf"), false, 1)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "n.gguf"), []byte("theirs"), 0o644)
	if _, err := g.Commit(); err == nil {
		t.Fatal("commit overwrote another writer's file")
	}
	g.Abort()

	// What a process is still writing is what RemovePending deletes.
	h, err := Create(filepath.Join(dir, "o.gguf"), true, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Sibling("step"); err != nil {
		t.Fatal(err)
	}
	RemovePending()
	if got := entries(t, dir); len(got) != 2 {
		t.Fatalf("after RemovePending: %v", got)
	}
}
