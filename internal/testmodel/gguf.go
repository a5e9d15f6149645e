package testmodel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// A small GGUF v3 reader and writer. We keep our own rather than ollama's fs/ggml because
// we need every value with its exact GGUF type (to copy tokenizer metadata verbatim), a
// fixed key order (byte-identical files from one seed) and buffered streaming writes of
// multi-gigabyte tensors.

const (
	ggufMagic     = "GGUF"
	ggufVersion   = 3
	ggufAlignment = 32
)

// GGUF value types (gguf.h).
const (
	tUint8 uint32 = iota
	tInt8
	tUint16
	tInt16
	tUint32
	tInt32
	tFloat32
	tBool
	tString
	tArray
	tUint64
	tInt64
	tFloat64
)

// ggml tensor types we write or read shapes of.
const (
	typeF32 uint32 = 0
	typeF16 uint32 = 1
)

// kv is one metadata entry. Scalars hold the Go type matching typ (uint32, float32,
// string, bool, ...); arrays hold a typed slice ([]string, []float32, []int32, ...) with
// elem the element type.
type kv struct {
	key  string
	typ  uint32
	elem uint32
	val  any
}

func kvU32(k string, v uint32) kv     { return kv{key: k, typ: tUint32, val: v} }
func kvI32(k string, v int32) kv      { return kv{key: k, typ: tInt32, val: v} }
func kvF32(k string, v float32) kv    { return kv{key: k, typ: tFloat32, val: v} }
func kvBool(k string, v bool) kv      { return kv{key: k, typ: tBool, val: v} }
func kvStr(k, v string) kv            { return kv{key: k, typ: tString, val: v} }
func kvStrs(k string, v []string) kv  { return kv{key: k, typ: tArray, elem: tString, val: v} }
func kvF32s(k string, v []float32) kv { return kv{key: k, typ: tArray, elem: tFloat32, val: v} }
func kvI32s(k string, v []int32) kv   { return kv{key: k, typ: tArray, elem: tInt32, val: v} }

// tensorInfo describes a tensor in a GGUF header; shape is in ggml order (ne0 first).
type tensorInfo struct {
	name   string
	shape  []uint64
	typ    uint32
	offset uint64 // relative to the data section
}

func (t tensorInfo) elements() uint64 {
	n := uint64(1)
	for _, d := range t.shape {
		n *= d
	}
	return n
}

func (t tensorInfo) bytes() uint64 {
	switch t.typ {
	case typeF32:
		return 4 * t.elements()
	case typeF16:
		return 2 * t.elements()
	}
	panic(fmt.Sprintf("testmodel: tensor type %d not writable", t.typ))
}

// ggufFile is a parsed header: metadata in file order and tensor infos.
type ggufFile struct {
	kvs     []kv
	tensors []tensorInfo
}

func (g *ggufFile) get(key string) (kv, bool) {
	for _, e := range g.kvs {
		if e.key == key {
			return e, true
		}
	}
	return kv{}, false
}

func (g *ggufFile) str(key string) string {
	e, _ := g.get(key)
	s, _ := e.val.(string)
	return s
}

func (g *ggufFile) tensor(name string) (tensorInfo, bool) {
	for _, t := range g.tensors {
		if t.name == name {
			return t, true
		}
	}
	return tensorInfo{}, false
}

// readGGUFHeader reads a GGUF file's metadata and tensor infos (not the tensor data).
func readGGUFHeader(path string) (*ggufFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &reader{r: bufio.NewReaderSize(f, 1<<16)}
	var magic [4]byte
	r.read(&magic)
	var version uint32
	var nt, nkv uint64
	r.read(&version)
	r.read(&nt)
	r.read(&nkv)
	if r.err != nil {
		return nil, fmt.Errorf("%s: %w", path, r.err)
	}
	if string(magic[:]) != ggufMagic || version < 2 || version > 3 {
		return nil, fmt.Errorf("%s: not a GGUF v2/v3 file", path)
	}
	if nt > 1<<20 || nkv > 1<<20 {
		return nil, fmt.Errorf("%s: implausible tensor/key count", path)
	}
	g := &ggufFile{}
	for range nkv {
		e := kv{key: r.str()}
		r.read(&e.typ)
		e.val, e.elem = r.value(e.typ)
		if r.err != nil {
			return nil, fmt.Errorf("%s: key %q: %w", path, e.key, r.err)
		}
		g.kvs = append(g.kvs, e)
	}
	for range nt {
		t := tensorInfo{name: r.str()}
		var nd uint32
		r.read(&nd)
		if nd > 4 {
			return nil, fmt.Errorf("%s: tensor %q has %d dimensions", path, t.name, nd)
		}
		t.shape = make([]uint64, nd)
		r.read(t.shape)
		r.read(&t.typ)
		r.read(&t.offset)
		if r.err != nil {
			return nil, fmt.Errorf("%s: tensor info: %w", path, r.err)
		}
		g.tensors = append(g.tensors, t)
	}
	return g, nil
}

// reader keeps the first error so parsing code reads straight through.
type reader struct {
	r   *bufio.Reader
	err error
}

func (r *reader) read(v any) {
	if r.err == nil {
		r.err = binary.Read(r.r, binary.LittleEndian, v)
		if r.err == io.EOF {
			r.err = io.ErrUnexpectedEOF
		}
	}
}

func (r *reader) str() string {
	var n uint64
	r.read(&n)
	if r.err != nil {
		return ""
	}
	if n > 1<<26 {
		r.err = errors.New("string too long")
		return ""
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		r.err = io.ErrUnexpectedEOF
	}
	return string(b)
}

// value reads a value of type t; for arrays it also returns the element type.
func (r *reader) value(t uint32) (any, uint32) {
	switch t {
	case tArray:
		var et uint32
		var n uint64
		r.read(&et)
		r.read(&n)
		if r.err != nil {
			return nil, 0
		}
		if n > 1<<24 {
			r.err = errors.New("array too long")
			return nil, 0
		}
		switch et {
		case tString:
			s := make([]string, n)
			for i := range s {
				s[i] = r.str()
			}
			return s, et
		case tArray:
			r.err = errors.New("nested arrays are not supported")
			return nil, 0
		}
		s := newSlice(et, int(n))
		if s == nil {
			r.err = fmt.Errorf("unknown array element type %d", et)
			return nil, 0
		}
		r.read(s)
		return s, et
	case tString:
		return r.str(), 0
	}
	p := newScalar(t)
	if p == nil {
		r.err = fmt.Errorf("unknown value type %d", t)
		return nil, 0
	}
	r.read(p)
	return derefScalar(p), 0
}

func newSlice(t uint32, n int) any {
	switch t {
	case tUint8:
		return make([]uint8, n)
	case tInt8:
		return make([]int8, n)
	case tUint16:
		return make([]uint16, n)
	case tInt16:
		return make([]int16, n)
	case tUint32:
		return make([]uint32, n)
	case tInt32:
		return make([]int32, n)
	case tFloat32:
		return make([]float32, n)
	case tBool:
		return make([]bool, n)
	case tUint64:
		return make([]uint64, n)
	case tInt64:
		return make([]int64, n)
	case tFloat64:
		return make([]float64, n)
	}
	return nil
}

func newScalar(t uint32) any {
	switch t {
	case tUint8:
		return new(uint8)
	case tInt8:
		return new(int8)
	case tUint16:
		return new(uint16)
	case tInt16:
		return new(int16)
	case tUint32:
		return new(uint32)
	case tInt32:
		return new(int32)
	case tFloat32:
		return new(float32)
	case tBool:
		return new(bool)
	case tUint64:
		return new(uint64)
	case tInt64:
		return new(int64)
	case tFloat64:
		return new(float64)
	}
	return nil
}

func derefScalar(p any) any {
	switch v := p.(type) {
	case *uint8:
		return *v
	case *int8:
		return *v
	case *uint16:
		return *v
	case *int16:
		return *v
	case *uint32:
		return *v
	case *int32:
		return *v
	case *float32:
		return *v
	case *bool:
		return *v
	case *uint64:
		return *v
	case *int64:
		return *v
	case *float64:
		return *v
	}
	return nil
}

// writer streams a GGUF file: header, metadata, tensor infos, then tensor data in the
// order of the infos, each padded to the alignment.
type writer struct {
	w   *bufio.Writer
	n   uint64 // bytes written so far
	err error
}

func (w *writer) write(v any) {
	if w.err != nil {
		return
	}
	w.err = binary.Write(w.w, binary.LittleEndian, v)
	w.n += uint64(binary.Size(v))
}

func (w *writer) str(s string) {
	w.write(uint64(len(s)))
	if w.err == nil {
		_, w.err = w.w.WriteString(s)
		w.n += uint64(len(s))
	}
}

func (w *writer) pad() {
	for w.n%ggufAlignment != 0 && w.err == nil {
		w.err = w.w.WriteByte(0)
		w.n++
	}
}

func (w *writer) kv(e kv) {
	w.str(e.key)
	w.write(e.typ)
	switch e.typ {
	case tString:
		w.str(e.val.(string))
	case tArray:
		w.write(e.elem)
		if ss, ok := e.val.([]string); ok {
			w.write(uint64(len(ss)))
			for _, s := range ss {
				w.str(s)
			}
			return
		}
		w.write(uint64(sliceLen(e.val)))
		w.write(e.val)
	default:
		w.write(e.val)
	}
}

func sliceLen(v any) int {
	switch s := v.(type) {
	case []uint8:
		return len(s)
	case []int8:
		return len(s)
	case []uint16:
		return len(s)
	case []int16:
		return len(s)
	case []uint32:
		return len(s)
	case []int32:
		return len(s)
	case []float32:
		return len(s)
	case []bool:
		return len(s)
	case []uint64:
		return len(s)
	case []int64:
		return len(s)
	case []float64:
		return len(s)
	}
	panic(fmt.Sprintf("testmodel: unsupported array value %T", v))
}

// header writes everything before the tensor data and assigns tensor offsets.
func (w *writer) header(kvs []kv, tensors []tensorInfo) {
	w.w.WriteString(ggufMagic)
	w.n += 4
	w.write(uint32(ggufVersion))
	w.write(uint64(len(tensors)))
	w.write(uint64(len(kvs)))
	for _, e := range kvs {
		w.kv(e)
	}
	var off uint64
	for i := range tensors {
		t := &tensors[i]
		t.offset = off
		off += t.bytes()
		off += (ggufAlignment - off%ggufAlignment) % ggufAlignment
		w.str(t.name)
		w.write(uint32(len(t.shape)))
		w.write(t.shape)
		w.write(t.typ)
		w.write(t.offset)
	}
	w.pad()
}

// data writes one tensor's values (converted to its type), then pads.
func (w *writer) data(t tensorInfo, vals []float32) {
	if w.err != nil {
		return
	}
	switch t.typ {
	case typeF32:
		var buf [4]byte
		for _, v := range vals {
			binary.LittleEndian.PutUint32(buf[:], math.Float32bits(v))
			w.w.Write(buf[:])
		}
		w.n += 4 * uint64(len(vals))
	case typeF16:
		var buf [2]byte
		for _, v := range vals {
			binary.LittleEndian.PutUint16(buf[:], f32ToF16(v))
			w.w.Write(buf[:])
		}
		w.n += 2 * uint64(len(vals))
	}
}
