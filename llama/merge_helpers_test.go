package llama_test

import (
	"encoding/binary"
	"os"
	"testing"
)

// rawGGUF reads a GGUF file independently of the code under test: each key's raw value
// bytes (type tag included) and each tensor's raw data.
func rawGGUF(t *testing.T, path string) (kvs map[string][]byte, tensors map[string][]byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := 0
	u32 := func() uint32 { v := binary.LittleEndian.Uint32(b[off:]); off += 4; return v }
	u64 := func() uint64 { v := binary.LittleEndian.Uint64(b[off:]); off += 8; return v }
	str := func() string { n := int(u64()); s := string(b[off : off+n]); off += n; return s }
	sizes := map[uint32]int{0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
	var skip func(typ uint32)
	skip = func(typ uint32) {
		switch typ {
		case 8:
			str()
		case 9:
			et := u32()
			n := u64()
			for i := uint64(0); i < n; i++ {
				skip(et)
			}
		default:
			off += sizes[typ]
		}
	}
	if string(b[:4]) != "GGUF" {
		t.Fatalf("%s: not GGUF", path)
	}
	off = 8
	nt, nkv := u64(), u64()
	kvs = map[string][]byte{}
	align := uint64(32)
	for i := uint64(0); i < nkv; i++ {
		k := str()
		start := off
		typ := u32()
		if k == "general.alignment" {
			align = uint64(binary.LittleEndian.Uint32(b[off:]))
		}
		skip(typ)
		kvs[k] = b[start:off]
	}
	type ti struct {
		name string
		size uint64
		off  uint64
	}
	var infos []ti
	for i := uint64(0); i < nt; i++ {
		name := str()
		nd := u32()
		ne := uint64(1)
		for d := uint32(0); d < nd; d++ {
			ne *= u64()
		}
		typ := u32()
		o := u64()
		var size uint64
		switch typ {
		case 0:
			size = ne * 4
		case 1, 30:
			size = ne * 2
		default:
			size = 0 // quantised: compared by the caller through Inspect if needed
		}
		infos = append(infos, ti{name, size, o})
	}
	data := (uint64(off) + align - 1) / align * align
	tensors = map[string][]byte{}
	for _, x := range infos {
		tensors[x.name] = b[data+x.off : data+x.off+x.size]
	}
	return kvs, tensors
}
