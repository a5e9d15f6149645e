package convert

import (
	"encoding/binary"
	"io"
	"math"
	"os"

	"github.com/x448/float16"
)

// GGUF tensor kinds we write (ggml_type values).
const (
	kindF32  uint32 = 0
	kindF16  uint32 = 1
	kindBF16 uint32 = 30
)

// storeKind is the type a weight keeps in the GGUF, the rule ollama's converter and
// llama.cpp's default (--outtype auto) follow: vectors (norms, biases) in F32, matrices
// in BF16 when the checkpoint is BF16, else F16.
func storeKind(t stTensor) uint32 {
	if len(t.Shape) < 2 {
		return kindF32
	}
	if t.DType == "BF16" {
		return kindBF16
	}
	return kindF16
}

// stWriter writes a safetensors tensor as kind, streaming it when no conversion is needed.
type stWriter struct {
	t    stTensor
	kind uint32
}

func (w stWriter) WriteTo(out io.Writer) (int64, error) {
	same := w.t.DType == "F32" && w.kind == kindF32 || w.t.DType == "F16" && w.kind == kindF16 || w.t.DType == "BF16" && w.kind == kindBF16
	if same {
		f, err := os.Open(w.t.File)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		return io.Copy(out, io.NewSectionReader(f, w.t.Off, w.t.Size))
	}
	v, err := w.t.readF32()
	if err != nil {
		return 0, err
	}
	return f32Data{v, w.kind}.WriteTo(out)
}

// f32Data writes float32 values as kind.
type f32Data struct {
	v    []float32
	kind uint32
}

func (d f32Data) WriteTo(out io.Writer) (int64, error) {
	var b []byte
	switch d.kind {
	case kindF32:
		b = make([]byte, 4*len(d.v))
		for i, x := range d.v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
	case kindF16:
		b = make([]byte, 2*len(d.v))
		for i, x := range d.v {
			binary.LittleEndian.PutUint16(b[2*i:], float16.Fromfloat32(x).Bits())
		}
	case kindBF16:
		b = make([]byte, 2*len(d.v))
		for i, x := range d.v {
			binary.LittleEndian.PutUint16(b[2*i:], bf16(x))
		}
	}
	n, err := out.Write(b)
	return int64(n), err
}

// bf16 rounds to the nearest bfloat16 (ties to even), keeping NaN a NaN.
func bf16(x float32) uint16 {
	u := math.Float32bits(x)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}

// ggmlShape turns a PyTorch shape (rows first) into ggml's order (ne0 first).
func ggmlShape(s []uint64) []uint64 {
	out := make([]uint64, len(s))
	for i := range s {
		out[i] = s[len(s)-1-i]
	}
	return out
}
