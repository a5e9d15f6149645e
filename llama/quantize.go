package llama

// #include <stdlib.h>
// #include "ggml.h"
// #include "llama.h"
// #include "conch.h"
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"github.com/magicconch/conch/internal/outfile"
)

// QuantType is an output type of llama.cpp's quantiser, under llama.cpp's own name.
type QuantType struct {
	Name string // "q4_k_m", as llama-quantize spells it (lower case)
	Desc string
	// ftype is the llama_ftype; weight the ggml type most weights get (the K-quant mixes
	// give some tensors a larger type).
	ftype  C.enum_llama_ftype
	weight uint32
}

// IsFloat reports whether the type keeps weights unquantised (f32, f16, bf16).
func (q QuantType) IsFloat() bool {
	return q.weight == C.GGML_TYPE_F32 || q.weight == C.GGML_TYPE_F16 || q.weight == C.GGML_TYPE_BF16
}

// kQuant reports whether the type is one of llama.cpp's K-quant recipes (and IQ4_XS),
// which its quantiser applies and falls back from tensor by tensor.
func (q QuantType) kQuant() bool {
	switch q.weight {
	case C.GGML_TYPE_Q2_K, C.GGML_TYPE_Q3_K, C.GGML_TYPE_Q4_K, C.GGML_TYPE_Q5_K, C.GGML_TYPE_Q6_K, C.GGML_TYPE_IQ4_XS:
		return true
	}
	return false
}

// The types offered. Types that need an importance matrix (IQ1, IQ2, Q2_K_S) are left
// out: without one llama.cpp refuses them.
var quantTypes = []QuantType{
	{"f32", "32-bit float, no loss", C.LLAMA_FTYPE_ALL_F32, C.GGML_TYPE_F32},
	{"f16", "16-bit float, practically no loss", C.LLAMA_FTYPE_MOSTLY_F16, C.GGML_TYPE_F16},
	{"bf16", "bfloat16, practically no loss", C.LLAMA_FTYPE_MOSTLY_BF16, C.GGML_TYPE_BF16},
	{"q8_0", "8.5 bits per weight, very small loss", C.LLAMA_FTYPE_MOSTLY_Q8_0, C.GGML_TYPE_Q8_0},
	{"q6_k", "6.6 bits per weight", C.LLAMA_FTYPE_MOSTLY_Q6_K, C.GGML_TYPE_Q6_K},
	{"q5_k_m", "5.7 bits per weight mix", C.LLAMA_FTYPE_MOSTLY_Q5_K_M, C.GGML_TYPE_Q5_K},
	{"q5_k_s", "5.5 bits per weight", C.LLAMA_FTYPE_MOSTLY_Q5_K_S, C.GGML_TYPE_Q5_K},
	{"q5_1", "6 bits per weight (legacy)", C.LLAMA_FTYPE_MOSTLY_Q5_1, C.GGML_TYPE_Q5_1},
	{"q5_0", "5.5 bits per weight (legacy)", C.LLAMA_FTYPE_MOSTLY_Q5_0, C.GGML_TYPE_Q5_0},
	{"q4_k_m", "4.8 bits per weight mix, the usual choice", C.LLAMA_FTYPE_MOSTLY_Q4_K_M, C.GGML_TYPE_Q4_K},
	{"q4_k_s", "4.6 bits per weight", C.LLAMA_FTYPE_MOSTLY_Q4_K_S, C.GGML_TYPE_Q4_K},
	{"q4_1", "5 bits per weight (legacy)", C.LLAMA_FTYPE_MOSTLY_Q4_1, C.GGML_TYPE_Q4_1},
	{"q4_0", "4.5 bits per weight (legacy)", C.LLAMA_FTYPE_MOSTLY_Q4_0, C.GGML_TYPE_Q4_0},
	{"iq4_nl", "4.5 bits per weight, non-linear", C.LLAMA_FTYPE_MOSTLY_IQ4_NL, C.GGML_TYPE_IQ4_NL},
	{"iq4_xs", "4.25 bits per weight, non-linear", C.LLAMA_FTYPE_MOSTLY_IQ4_XS, C.GGML_TYPE_IQ4_XS},
	{"q3_k_l", "4.3 bits per weight mix", C.LLAMA_FTYPE_MOSTLY_Q3_K_L, C.GGML_TYPE_Q3_K},
	{"q3_k_m", "3.9 bits per weight mix", C.LLAMA_FTYPE_MOSTLY_Q3_K_M, C.GGML_TYPE_Q3_K},
	{"q3_k_s", "3.5 bits per weight", C.LLAMA_FTYPE_MOSTLY_Q3_K_S, C.GGML_TYPE_Q3_K},
	{"q2_k", "3.4 bits per weight mix, large loss", C.LLAMA_FTYPE_MOSTLY_Q2_K, C.GGML_TYPE_Q2_K},
}

// llama-quantize's short aliases.
var quantAliases = map[string]string{"q4_k": "q4_k_m", "q5_k": "q5_k_m", "q3_k": "q3_k_m", "fp16": "f16", "fp32": "f32"}

// QuantTypes lists the output types Merge and Quantize accept, best quality first.
func QuantTypes() []QuantType { return append([]QuantType(nil), quantTypes...) }

// QuantTypeNames is the list of names, for help texts.
func QuantTypeNames() []string {
	names := make([]string, len(quantTypes))
	for i, q := range quantTypes {
		names[i] = q.Name
	}
	return names
}

// ParseQuantType finds a type by llama.cpp's name, in any case ("Q4_K_M", "q4_k_m").
func ParseQuantType(name string) (QuantType, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if a, ok := quantAliases[n]; ok {
		n = a
	}
	for _, q := range quantTypes {
		if q.Name == n {
			return q, nil
		}
	}
	return QuantType{}, fmt.Errorf("unknown output type %q (choose one of %s)", name, strings.Join(QuantTypeNames(), ", "))
}

// quantizable mirrors llama.cpp's choice of the tensors its quantiser converts (the rest,
// norms and biases above all, keep their type).
func quantizable(t TensorInfo) bool {
	n := t.Name
	dims := len(t.Shape) // as ggml_n_dims counts: trailing 1s do not count
	for dims > 1 && t.Shape[dims-1] == 1 {
		dims--
	}
	if !strings.HasSuffix(n, "weight") || dims < 2 {
		return false
	}
	for _, s := range []string{"_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
		"ssm_conv1d.weight", "shortconv.conv.weight", "time_mix_", "attn_rel_b.weight", ".position_embd."} {
		if strings.Contains(n, s) {
			return false
		}
	}
	return n != "position_embd.weight" && n != "token_types.weight"
}

// QuantizeParams says what Quantize converts.
type QuantizeParams struct {
	Input   string // a model GGUF
	Output  string
	Type    string // a name from QuantTypeNames
	Threads int    // 0: physical cores
	Force   bool   // replace an existing output
}

// QuantizeResult describes the file Quantize wrote.
type QuantizeResult struct {
	Output string
	Type   QuantType
	// Fallbacks are the tensors whose rows do not fill the type's blocks: they keep
	// another type (also logged as one warning line).
	Fallbacks []TypeFallback
	Size      int64
	Duration  time.Duration
}

// Quantize converts a model to another type, keeping every metadata key. The plain
// types (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl) are written tensor by
// tensor with llama.cpp's per-tensor choices and bytes; the K-quant mixes by llama.cpp's
// quantiser itself. Tensors whose rows do not fill the type's blocks keep a type that
// fits (llama.cpp's K-quant fallback, else f16) and are named in one warning line. The
// output appears only when it is complete and loads.
func Quantize(ctx context.Context, p QuantizeParams) (*QuantizeResult, error) {
	ensureInit()
	start := time.Now()
	q, err := ParseQuantType(p.Type)
	if err != nil {
		return nil, err
	}
	in, err := Inspect(p.Input)
	if err != nil {
		return nil, err
	}
	if err := in.checkModel(); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Input, err)
	}
	var types []uint32
	need := estimateSize(in, q)
	if q.plain() {
		types = planTypes(in, q)
		if err := checkConvertible(in, types, nil); err != nil {
			return nil, fmt.Errorf("%s: %w", p.Input, err)
		}
		need = plannedSize(in, types)
	}
	if err := distinctOutput(p.Output, p.Input); err != nil {
		return nil, err
	}
	out, err := outfile.Create(p.Output, p.Force, need)
	if err != nil {
		return nil, err
	}
	defer out.Abort()
	if q.plain() {
		job := writeJob{base: p.Input, out: out.Tmp, types: types, fileType: int(q.ftype), threads: p.Threads}
		if err := runWriter(ctx, job); err != nil {
			return nil, writeError(ctx, err, p.Output, "quantize to "+q.Name)
		}
	} else if err := quantizeFile(p.Input, out.Tmp, p.Output, q, p.Threads); err != nil {
		return nil, err
	}
	fb, size, err := finishOutput(ctx, out, q, "quantised")
	if err != nil {
		return nil, err
	}
	return &QuantizeResult{Output: p.Output, Type: q, Fallbacks: fb, Size: size, Duration: time.Since(start)}, nil
}

// quantizeFile runs llama_model_quantize from in to out (a temporary name for final).
func quantizeFile(in, out, final string, q QuantType, threads int) error {
	if threads <= 0 {
		threads = DefaultThreads()
	}
	cin, cout := C.CString(in), C.CString(out)
	defer C.free(unsafe.Pointer(cin))
	defer C.free(unsafe.Pointer(cout))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	if C.conch_quantize(cin, cout, C.int(q.ftype), C.int(threads)) != 0 {
		msg := C.GoString(C.conch_last_error())
		C.conch_clear_error()
		msg = strings.TrimPrefix(msg, "llama_model_quantize: failed to quantize: ")
		// The quantiser writes through an ofstream whose failure text says nothing useful.
		if strings.Contains(msg, "iostream error") {
			return fmt.Errorf("writing %s failed: %s (the partial output was removed)", final, outfile.DiskError(out))
		}
		if msg == "" {
			msg = "unknown error"
		}
		return fmt.Errorf("quantize to %s: %s", q.Name, strings.TrimSpace(msg))
	}
	return nil
}

// VerifyModel checks that llama.cpp loads the model at path, up to reading the weights
// (metadata, vocabulary, hyperparameters, every tensor's shape and place in the file),
// which it skips: the last check before a written model is moved into place, cheap
// even for a large model.
func VerifyModel(path string) error {
	ensureInit()
	g, err := Inspect(path)
	if err != nil {
		return err
	}
	if err := g.checkModel(); err != nil {
		return err
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	if C.conch_model_check(cpath) != 0 {
		return nativeError("llama.cpp cannot load it")
	}
	return nil
}

// distinctOutput refuses an output that is one of the inputs.
func distinctOutput(out string, inputs ...string) error {
	if out == "" {
		return errors.New("no output path")
	}
	ost, err := os.Stat(out)
	if err != nil {
		return nil
	}
	for _, in := range inputs {
		if ist, err := os.Stat(in); err == nil && os.SameFile(ist, ost) {
			return fmt.Errorf("the output %s is an input file: write to another path", out)
		}
	}
	return nil
}
