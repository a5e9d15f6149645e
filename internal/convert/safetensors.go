package convert

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/x448/float16"
)

// stTensor is one tensor of a safetensors file, checked against the file's size.
type stTensor struct {
	Name  string
	DType string   // F32, F16 or BF16
	Shape []uint64 // as PyTorch orders it (rows first)
	File  string
	Off   int64 // absolute offset of the data in File
	Size  int64
}

func (t stTensor) elements() uint64 {
	n := uint64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

var dtypeSize = map[string]int64{"F32": 4, "F16": 2, "BF16": 2}

// maxHeader bounds the JSON header: real ones are kilobytes, a corrupt length is huge.
const maxHeader = 100 << 20

// readSafetensors reads and checks the header of one safetensors file: every tensor must
// lie inside the file and hold exactly shape × dtype bytes. The ollama reader trusts the
// header; a truncated download would otherwise fail half way through writing.
func readSafetensors(path string) ([]stTensor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	name := filepath.Base(path)
	var n uint64
	if err := binary.Read(f, binary.LittleEndian, &n); err != nil {
		return nil, fmt.Errorf("%s: not a safetensors file (too short)", name)
	}
	if n == 0 || n > maxHeader || int64(n) > st.Size()-8 {
		return nil, fmt.Errorf("%s: corrupt or truncated safetensors file (header length %d, file %d bytes)", name, n, st.Size())
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return nil, fmt.Errorf("%s: truncated safetensors header", name)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("%s: corrupt safetensors header: %v", name, err)
	}
	base := 8 + int64(n)
	var out []stTensor
	for key, msg := range raw {
		if key == "__metadata__" {
			continue
		}
		var m struct {
			DType   string   `json:"dtype"`
			Shape   []uint64 `json:"shape"`
			Offsets []int64  `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &m); err != nil {
			return nil, fmt.Errorf("%s: tensor %s: corrupt header entry", name, key)
		}
		size, ok := dtypeSize[m.DType]
		if !ok {
			return nil, fmt.Errorf("%s: tensor %s has dtype %s (F32, F16 and BF16 are supported; quantised checkpoints are not)", name, key, m.DType)
		}
		if len(m.Shape) == 0 || len(m.Offsets) != 2 || m.Offsets[0] < 0 || m.Offsets[1] < m.Offsets[0] {
			return nil, fmt.Errorf("%s: tensor %s: corrupt header entry", name, key)
		}
		t := stTensor{Name: key, DType: m.DType, Shape: m.Shape, File: path, Off: base + m.Offsets[0], Size: m.Offsets[1] - m.Offsets[0]}
		if e := t.elements(); e == 0 || e > math.MaxInt64/8 || int64(e)*size != t.Size {
			return nil, fmt.Errorf("%s: tensor %s: shape %v does not match its %d bytes", name, key, m.Shape, t.Size)
		}
		if t.Off+t.Size > st.Size() {
			return nil, fmt.Errorf("%s is truncated: tensor %s ends at byte %d, the file has %d", name, key, t.Off+t.Size, st.Size())
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// scanWeights checks every *.safetensors file in dir (a sharded model's index must name
// only files that exist) and returns their tensors.
func scanWeights(dir string) ([]stTensor, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		return nil, err
	}
	if idx, err := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json")); err == nil {
		var m struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(idx, &m); err != nil {
			return nil, fmt.Errorf("model.safetensors.index.json: %v", err)
		}
		for _, f := range m.WeightMap {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				return nil, fmt.Errorf("shard %s named by model.safetensors.index.json is missing", f)
			}
		}
	}
	var all []stTensor
	seen := map[string]string{}
	for _, f := range files {
		ts, err := readSafetensors(f)
		if err != nil {
			return nil, err
		}
		for _, t := range ts {
			if prev, ok := seen[t.Name]; ok {
				return nil, fmt.Errorf("tensor %s is in both %s and %s", t.Name, filepath.Base(prev), filepath.Base(f))
			}
			seen[t.Name] = f
		}
		all = append(all, ts...)
	}
	return all, nil
}

// readF32 reads a tensor's values as float32.
func (t stTensor) readF32() ([]float32, error) {
	f, err := os.Open(t.File)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw := make([]byte, t.Size)
	if _, err := f.ReadAt(raw, t.Off); err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", t.Name, filepath.Base(t.File), err)
	}
	n := int(t.elements())
	out := make([]float32, n)
	switch t.DType {
	case "F32":
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case "F16":
		for i := range out {
			out[i] = float16.Frombits(binary.LittleEndian.Uint16(raw[2*i:])).Float32()
		}
	case "BF16":
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
		}
	default:
		return nil, errors.New("unsupported dtype " + t.DType)
	}
	return out, nil
}
