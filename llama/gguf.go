package llama

// #include "ggml.h"
import "C"

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
)

// GGUF is what Inspect reads from a GGUF file's header, without loading any weights.
type GGUF struct {
	Path       string
	Version    uint32
	KV         map[string]any // scalars and small arrays; large arrays appear as ArrayInfo
	Tensors    []TensorInfo
	DataOffset int64
	FileSize   int64
}

// ArrayInfo stands in for a large array (a tokenizer's vocabulary) that Inspect skips.
type ArrayInfo struct {
	Type uint32
	Len  uint64
}

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name   string
	Shape  []int64 // ne[0] first, as ggml counts
	Type   uint32  // ggml_type
	Offset uint64  // from the start of the data section
	Size   int64   // bytes
}

// TypeName is ggml's name for the tensor's type ("f16", "q8_0", ...).
func (t TensorInfo) TypeName() string { return TypeName(t.Type) }

// Elements is the number of values in the tensor.
func (t TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// TypeName is ggml's name for a ggml_type.
func TypeName(t uint32) string {
	if t >= C.GGML_TYPE_COUNT {
		return fmt.Sprintf("type%d", t)
	}
	return C.GoString(C.ggml_type_name(C.enum_ggml_type(t)))
}

const ggufMagic = 0x46554747 // "GGUF" little endian

// largeArray is where Inspect stops decoding arrays: tokenizer vocabularies are big
// and nobody validating a file needs them.
const largeArray = 4096

// String returns a string metadata value, or "".
func (g *GGUF) String(key string) string {
	s, _ := g.KV[key].(string)
	return s
}

// Uint returns an integer metadata value and whether it was present.
func (g *GGUF) Uint(key string) (uint64, bool) {
	switch v := g.KV[key].(type) {
	case uint8:
		return uint64(v), true
	case int8:
		return uint64(v), v >= 0
	case uint16:
		return uint64(v), true
	case int16:
		return uint64(v), v >= 0
	case uint32:
		return uint64(v), true
	case int32:
		return uint64(v), v >= 0
	case uint64:
		return v, true
	case int64:
		return uint64(v), v >= 0
	}
	return 0, false
}

// Float returns a float metadata value and whether it was present.
func (g *GGUF) Float(key string) (float64, bool) {
	switch v := g.KV[key].(type) {
	case float32:
		return float64(v), true
	case float64:
		return v, true
	}
	return 0, false
}

// Arch is general.architecture.
func (g *GGUF) Arch() string { return g.String("general.architecture") }

// IsAdapter reports whether the file is a LoRA adapter rather than a model.
func (g *GGUF) IsAdapter() bool { return g.String("general.type") == "adapter" }

// Tensor finds a tensor by name.
func (g *GGUF) Tensor(name string) (TensorInfo, bool) {
	for _, t := range g.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

// Keys lists the metadata keys in sorted order.
func (g *GGUF) Keys() []string {
	keys := make([]string, 0, len(g.KV))
	for k := range g.KV {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

type countingReader struct {
	r   *bufio.Reader
	off int64
	max int64 // file size: no length may point past it
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.off += int64(n)
	return n, err
}

func (c *countingReader) read(v any) error {
	if err := binary.Read(c, binary.LittleEndian, v); err != nil {
		return truncated(err)
	}
	return nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("file is truncated")
	}
	return err
}

func (c *countingReader) str() (string, error) {
	var n uint64
	if err := c.read(&n); err != nil {
		return "", err
	}
	if int64(n) < 0 || c.off+int64(n) > c.max {
		return "", errors.New("file is truncated (a string runs past the end)")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		return "", truncated(err)
	}
	return string(b), nil
}

// gguf value types
const (
	gUint8 uint32 = iota
	gInt8
	gUint16
	gInt16
	gUint32
	gInt32
	gFloat32
	gBool
	gString
	gArray
	gUint64
	gInt64
	gFloat64
)

var scalarSize = map[uint32]int64{gUint8: 1, gInt8: 1, gUint16: 2, gInt16: 2, gUint32: 4, gInt32: 4,
	gFloat32: 4, gBool: 1, gUint64: 8, gInt64: 8, gFloat64: 8}

func (c *countingReader) value(t uint32, depth int) (any, error) {
	switch t {
	case gUint8:
		var v uint8
		return v, c.read(&v)
	case gInt8:
		var v int8
		return v, c.read(&v)
	case gUint16:
		var v uint16
		return v, c.read(&v)
	case gInt16:
		var v int16
		return v, c.read(&v)
	case gUint32:
		var v uint32
		return v, c.read(&v)
	case gInt32:
		var v int32
		return v, c.read(&v)
	case gFloat32:
		var v float32
		return v, c.read(&v)
	case gBool:
		var v uint8
		err := c.read(&v)
		return v != 0, err
	case gString:
		return c.str()
	case gUint64:
		var v uint64
		return v, c.read(&v)
	case gInt64:
		var v int64
		return v, c.read(&v)
	case gFloat64:
		var v float64
		return v, c.read(&v)
	case gArray:
		if depth > 0 {
			return nil, errors.New("nested arrays are not supported")
		}
		var et uint32
		var n uint64
		if err := c.read(&et); err != nil {
			return nil, err
		}
		if err := c.read(&n); err != nil {
			return nil, err
		}
		if n > uint64(c.max) {
			return nil, errors.New("file is truncated (an array runs past the end)")
		}
		if n > largeArray {
			if sz, ok := scalarSize[et]; ok {
				if c.off+sz*int64(n) > c.max {
					return nil, errors.New("file is truncated (an array runs past the end)")
				}
				if _, err := io.CopyN(io.Discard, c, sz*int64(n)); err != nil {
					return nil, truncated(err)
				}
			} else {
				for i := uint64(0); i < n; i++ {
					if _, err := c.value(et, depth+1); err != nil {
						return nil, err
					}
				}
			}
			return ArrayInfo{Type: et, Len: n}, nil
		}
		out := make([]any, 0, n)
		for i := uint64(0); i < n; i++ {
			v, err := c.value(et, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown metadata value type %d", t)
}

// Inspect reads and checks a GGUF file's header and tensor table in Go, so that files
// llama.cpp would reject (or abort on) get a clear one-line error first.
func Inspect(path string) (*GGUF, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s: is a directory, not a GGUF file", path)
	}
	g, err := readGGUF(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	g.Path = path
	return g, nil
}

func readGGUF(f *os.File, size int64) (*GGUF, error) {
	c := &countingReader{r: bufio.NewReaderSize(f, 1<<16), max: size}
	var magic, version uint32
	if err := c.read(&magic); err != nil || magic != ggufMagic {
		return nil, errors.New("not a GGUF file")
	}
	if err := c.read(&version); err != nil {
		return nil, err
	}
	if version < 2 || version > 3 {
		return nil, fmt.Errorf("unsupported GGUF version %d", version)
	}
	var nTensors, nKV uint64
	if err := c.read(&nTensors); err != nil {
		return nil, err
	}
	if err := c.read(&nKV); err != nil {
		return nil, err
	}
	if nTensors > uint64(size)/8 || nKV > uint64(size)/8 {
		return nil, fmt.Errorf("file is truncated or corrupt: the header announces %d tensors and %d keys in %d bytes", nTensors, nKV, size)
	}
	g := &GGUF{Version: version, KV: make(map[string]any, nKV), FileSize: size}
	for i := uint64(0); i < nKV; i++ {
		key, err := c.str()
		if err != nil {
			return nil, err
		}
		var t uint32
		if err := c.read(&t); err != nil {
			return nil, err
		}
		v, err := c.value(t, 0)
		if err != nil {
			return nil, fmt.Errorf("metadata %q: %w", key, err)
		}
		g.KV[key] = v
	}
	for i := uint64(0); i < nTensors; i++ {
		name, err := c.str()
		if err != nil {
			return nil, err
		}
		var nd uint32
		if err := c.read(&nd); err != nil {
			return nil, err
		}
		if nd == 0 || nd > 4 {
			return nil, fmt.Errorf("tensor %q: %d dimensions", name, nd)
		}
		ti := TensorInfo{Name: name, Shape: make([]int64, nd)}
		for d := range ti.Shape {
			var n uint64
			if err := c.read(&n); err != nil {
				return nil, err
			}
			if n == 0 || n > math.MaxInt32*64 {
				return nil, fmt.Errorf("tensor %q: bad dimension %d", name, n)
			}
			ti.Shape[d] = int64(n)
		}
		if err := c.read(&ti.Type); err != nil {
			return nil, err
		}
		if err := c.read(&ti.Offset); err != nil {
			return nil, err
		}
		if ti.Type >= C.GGML_TYPE_COUNT || C.ggml_blck_size(C.enum_ggml_type(ti.Type)) == 0 {
			return nil, fmt.Errorf("tensor %q: unknown tensor type %d", name, ti.Type)
		}
		blck := int64(C.ggml_blck_size(C.enum_ggml_type(ti.Type)))
		if ti.Shape[0]%blck != 0 {
			return nil, fmt.Errorf("tensor %q: row of %d values is not a multiple of %s's block of %d", name, ti.Shape[0], ti.TypeName(), blck)
		}
		ti.Size = int64(C.ggml_row_size(C.enum_ggml_type(ti.Type), C.int64_t(ti.Shape[0]))) * (ti.Elements() / ti.Shape[0])
		g.Tensors = append(g.Tensors, ti)
	}
	align := int64(32)
	if a, ok := g.Uint("general.alignment"); ok {
		if a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("bad general.alignment %d", a)
		}
		align = int64(a)
	}
	g.DataOffset = (c.off + align - 1) / align * align
	for _, t := range g.Tensors {
		end := g.DataOffset + int64(t.Offset) + t.Size
		if end > size {
			return nil, fmt.Errorf("file is truncated: tensor %q needs %d bytes, the file has %d", t.Name, end, size)
		}
	}
	return g, nil
}

// Architectures Conch loads for inference; llama.cpp knows more, but these are the ones
// our tests cover. Training supports a subset (see TrainableArchitectures).
var supportedArchs = map[string]bool{
	"llama": true, "qwen2": true, "qwen3": true, "qwen2moe": true, "qwen3moe": true,
	"mistral3": true, "gemma": true, "gemma2": true, "gemma3": true, "phi3": true,
	"deepseek2": true, "granite": true, "olmo2": true, "smollm3": true, "gpt-oss": true,
}

// checkModel validates that a GGUF is a model llama.cpp can load without aborting.
func (g *GGUF) checkModel() error {
	if g.IsAdapter() {
		return errors.New("this is a LoRA adapter, not a model: load a base model and pass the adapter with --lora")
	}
	arch := g.Arch()
	if arch == "" {
		return errors.New("no general.architecture: not a model file")
	}
	if !supportedArchs[arch] {
		return fmt.Errorf("unsupported architecture %q", arch)
	}
	if len(g.Tensors) == 0 {
		return errors.New("the file holds no tensors (a vocabulary-only file?)")
	}
	embd, ok1 := g.Uint(arch + ".embedding_length")
	heads, ok2 := g.Uint(arch + ".attention.head_count")
	if !ok1 || !ok2 || embd == 0 || heads == 0 {
		return fmt.Errorf("missing or zero %s.embedding_length / %s.attention.head_count", arch, arch)
	}
	if _, ok := g.Uint(arch + ".attention.key_length"); !ok && embd%heads != 0 {
		return fmt.Errorf("embedding length %d is not divisible by %d heads", embd, heads)
	}
	if rd, ok := g.Uint(arch + ".rope.dimension_count"); ok {
		hd := embd / heads
		if kl, ok := g.Uint(arch + ".attention.key_length"); ok {
			hd = kl
		}
		if rd > hd {
			return fmt.Errorf("rope dimension %d exceeds head dimension %d", rd, hd)
		}
	}
	return nil
}
