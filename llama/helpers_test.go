package llama

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// sharedData finds ../shared/data from the package directory (CI keeps shared/ beside the clone).
func sharedData(t testing.TB) string {
	t.Helper()
	dir, _ := os.Getwd()
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		p := filepath.Join(d, "shared", "data")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
	}
	t.Fatalf("shared/data not found above %s", dir)
	return ""
}

func stories(t testing.TB) string {
	return filepath.Join(sharedData(t), "models", "tinyllamas-stories260K", "stories260K.gguf")
}

// ggufKV is a metadata entry for writeGGUF: string, uint32 or float32 values.
type ggufKV struct {
	key string
	val any
}

// writeGGUF writes a GGUF with the given metadata and F32 tensors of the given shapes
// (zero-filled): enough to exercise validation.
func writeGGUF(t testing.TB, path string, kvs []ggufKV, tensors map[string][]int64) {
	t.Helper()
	var b []byte
	le := binary.LittleEndian
	u32 := func(v uint32) { b = le.AppendUint32(b, v) }
	u64 := func(v uint64) { b = le.AppendUint64(b, v) }
	str := func(s string) { u64(uint64(len(s))); b = append(b, s...) }
	u32(ggufMagic)
	u32(3)
	u64(uint64(len(tensors)))
	u64(uint64(len(kvs)))
	for _, kv := range kvs {
		str(kv.key)
		switch v := kv.val.(type) {
		case string:
			u32(gString)
			str(v)
		case uint32:
			u32(gUint32)
			u32(v)
		case float32:
			u32(gFloat32)
			b = le.AppendUint32(b, mathFloat32bits(v))
		default:
			t.Fatalf("unsupported kv type %T", v)
		}
	}
	var off uint64
	var sizes []uint64
	names := sortedKeys(tensors)
	for _, name := range names {
		shape := tensors[name]
		str(name)
		u32(uint32(len(shape)))
		n := uint64(1)
		for _, d := range shape {
			u64(uint64(d))
			n *= uint64(d)
		}
		u32(0) // F32
		u64(off)
		sz := (n*4 + 31) / 32 * 32
		sizes = append(sizes, sz)
		off += sz
	}
	for len(b)%32 != 0 {
		b = append(b, 0)
	}
	b = append(b, make([]byte, off)...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
