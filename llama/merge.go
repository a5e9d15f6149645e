package llama

// #include <stdlib.h>
// #include "ggml.h"
// #include "conch.h"
import "C"

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/magicconch/conch/internal/outfile"
)

// MergeLoRA is one adapter to fold into the base model.
type MergeLoRA struct {
	Path  string
	Scale float32 // multiplies the adapter's own alpha/r: 1 merges it as trained
}

// MergeParams says what Merge writes.
type MergeParams struct {
	Base    string // the base model GGUF (any type llama.cpp can dequantise)
	LoRAs   []MergeLoRA
	Output  string
	Type    string // output type, a name from QuantTypeNames ("" is f16)
	Threads int    // 0: physical cores
	Force   bool   // replace an existing output
	// Progress, when set, is called now and then with the number of tensors written
	// (from another goroutine).
	Progress func(done, total int)
}

// MergeResult describes the merged model.
type MergeResult struct {
	Output    string
	Type      QuantType
	Tensors   int  // tensors in the model
	Merged    int  // tensors an adapter changed
	Quantized bool // the output type is a quantised one
	// Fallbacks are the tensors whose rows do not fill the output type's blocks: they
	// keep another type (also logged as one warning line).
	Fallbacks []TypeFallback
	Size      int64
	Duration  time.Duration
}

// mergeLoRA is a validated adapter.
type mergeLoRA struct {
	MergeLoRA
	info  *GGUF
	rank  int
	alpha float32
	sha   string
}

// Merge folds LoRA adapters into a base model, W' = W + Σ scale·(alpha/r)·B·A computed in
// F32 from the dequantised base, a slice of rows at a time: memory stays near one slice,
// not one model. Every base key (tokenizer, chat template, rope settings) is kept and
// provenance is added under conch.merge. For the plain types (f32, f16, bf16, q8_0, q4_0,
// q4_1, q5_0, q5_1, iq4_nl) the merged weights are converted straight from F32 with
// llama.cpp's per-tensor choices, and tensors already in their output type are copied
// byte for byte; tensors whose rows do not fit the type keep one that does (see
// TypeFallback). The K-quant mixes go through llama.cpp's quantiser afterwards. The
// output appears only when it is complete and loads; on any error or cancellation
// nothing is left behind.
func Merge(ctx context.Context, p MergeParams) (*MergeResult, error) {
	ensureInit()
	start := time.Now()
	if p.Type == "" {
		p.Type = "f16"
	}
	q, err := ParseQuantType(p.Type)
	if err != nil {
		return nil, err
	}
	if len(p.LoRAs) == 0 {
		return nil, errors.New("nothing to merge: give at least one adapter (to change only the type, quantize)")
	}
	base, err := Inspect(p.Base)
	if err != nil {
		return nil, err
	}
	if err := base.checkModel(); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Base, err)
	}
	loras := make([]mergeLoRA, len(p.LoRAs))
	touched := map[string]bool{}
	inputs := []string{p.Base}
	for i, l := range p.LoRAs {
		if math.IsNaN(float64(l.Scale)) || math.IsInf(float64(l.Scale), 0) {
			return nil, fmt.Errorf("%s: scale %v is not a number", l.Path, l.Scale)
		}
		info, err := Inspect(l.Path)
		if err != nil {
			return nil, err
		}
		rank, err := checkMergeAdapter(base, info, touched)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", l.Path, err)
		}
		alpha, _ := info.Float("adapter.lora.alpha")
		loras[i] = mergeLoRA{MergeLoRA: l, info: info, rank: rank, alpha: float32(alpha)}
		inputs = append(inputs, l.Path)
	}
	if err := distinctOutput(p.Output, inputs...); err != nil {
		return nil, err
	}

	// The plain types are written in one pass; a K-quant mix goes through an
	// intermediate file for llama.cpp's quantiser.
	var types []uint32
	if q.plain() {
		types = planTypes(base, q)
	} else {
		types = mergeTypes(base, touched)
	}
	if err := checkConvertible(base, types, touched); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Base, err)
	}

	need := plannedSize(base, types)
	if !q.plain() {
		need += estimateSize(base, q)
	}
	out, err := outfile.Create(p.Output, p.Force, need)
	if err != nil {
		return nil, err
	}
	defer out.Abort()

	// Provenance: what went in, identified by content.
	shas, err := hashFiles(ctx, inputs)
	if err != nil {
		return nil, err
	}
	for i := range loras {
		loras[i].sha = shas[i+1]
	}
	kvs := provenance(p.Base, shas[0], q, loras)

	job := writeJob{base: p.Base, out: out.Tmp, loras: loras, kvs: kvs, types: types, fileType: int(q.ftype),
		threads: p.Threads, progress: p.Progress}
	if !q.plain() {
		if job.out, err = out.Sibling("merge-partial"); err != nil {
			return nil, err
		}
		defer outfile.Remove(job.out)
		job.fileType = -1 // llama.cpp's quantiser records it
	}
	if err := runWriter(ctx, job); err != nil {
		return nil, writeError(ctx, err, p.Output, "merge")
	}
	if !q.plain() {
		if err := quantizeFile(job.out, out.Tmp, p.Output, q, p.Threads); err != nil {
			return nil, err
		}
		outfile.Remove(job.out)
	}
	fb, size, err := finishOutput(ctx, out, q, "merged")
	if err != nil {
		return nil, err
	}
	return &MergeResult{Output: p.Output, Type: q, Tensors: len(base.Tensors), Merged: len(touched), Quantized: !q.IsFloat(),
		Fallbacks: fb, Size: size, Duration: time.Since(start)}, nil
}

// checkMergeAdapter says why adapter cannot be merged into base, the way llama.cpp's
// adapter loader would (token_embd's pair is stored flipped), and marks the base weights
// it touches. It returns the adapter's rank.
func checkMergeAdapter(base, adapter *GGUF, touched map[string]bool) (int, error) {
	if !adapter.IsAdapter() {
		return 0, errors.New("not a LoRA adapter (general.type is not \"adapter\")")
	}
	if t := adapter.String("adapter.type"); t != "lora" {
		return 0, fmt.Errorf("adapter type %q is not supported (want lora)", t)
	}
	if adapter.Arch() != base.Arch() {
		return 0, fmt.Errorf("adapter is for architecture %q, the base model is %q", adapter.Arch(), base.Arch())
	}
	if a, ok := adapter.Float("adapter.lora.alpha"); ok && (math.IsNaN(a) || math.IsInf(a, 0)) {
		return 0, errors.New("adapter.lora.alpha is not a number")
	}
	type ab struct{ a, b *TensorInfo }
	pairs := map[string]*ab{}
	var names []string
	for i := range adapter.Tensors {
		t := &adapter.Tensors[i]
		w, isA := strings.CutSuffix(t.Name, ".lora_a")
		if !isA {
			var isB bool
			if w, isB = strings.CutSuffix(t.Name, ".lora_b"); !isB {
				return 0, fmt.Errorf("unexpected adapter tensor %q", t.Name)
			}
		}
		pr := pairs[w]
		if pr == nil {
			pr = &ab{}
			pairs[w] = pr
			names = append(names, w)
		}
		if isA {
			pr.a = t
		} else {
			pr.b = t
		}
		if !dequantisable(t.Type) {
			return 0, fmt.Errorf("adapter tensor %s has type %s, which cannot be read as F32", t.Name, t.TypeName())
		}
	}
	if len(names) == 0 {
		return 0, errors.New("the adapter holds no LoRA tensors")
	}
	rank := 0
	for _, w := range names {
		pr := pairs[w]
		if pr.a == nil || pr.b == nil {
			return 0, fmt.Errorf("%s lacks its lora_a or lora_b tensor", w)
		}
		bt, ok := base.Tensor(w)
		if !ok {
			return 0, fmt.Errorf("adapter tensor %s has no base weight %s: made for another model?", pr.a.Name, w)
		}
		if len(pr.a.Shape) != 2 || len(pr.b.Shape) != 2 || len(bt.Shape) != 2 {
			return 0, fmt.Errorf("%s: only 2-D weights can be merged", w)
		}
		var ok2 bool
		var r int64
		if strings.HasSuffix(w, "token_embd.weight") {
			// llama.cpp keeps the embedding's pair flipped: A [r, n_vocab], B [r, n_embd].
			ok2 = bt.Shape[0] == pr.b.Shape[1] && bt.Shape[1] == pr.a.Shape[1] && pr.a.Shape[0] == pr.b.Shape[0]
			r = pr.b.Shape[0]
		} else {
			ok2 = bt.Shape[0] == pr.a.Shape[0] && bt.Shape[1] == pr.b.Shape[1] && pr.a.Shape[1] == pr.b.Shape[0]
			r = pr.b.Shape[0]
		}
		if !ok2 {
			return 0, fmt.Errorf("%s: adapter shapes %v and %v do not fit the base weight %v: made for another model",
				w, pr.a.Shape, pr.b.Shape, bt.Shape)
		}
		if !dequantisable(bt.Type) {
			return 0, fmt.Errorf("base weight %s has type %s, which cannot be dequantised", w, bt.TypeName())
		}
		rank = max(rank, int(r))
		touched[w] = true
	}
	return rank, nil
}

// provenance lists the conch.merge keys: what went into the merge, by content hash.
func provenance(basePath, baseSHA string, q QuantType, loras []mergeLoRA) []mergeKV {
	kvs := []mergeKV{
		{key: "conch.merge.version", u32: 1, typ: 1},
		{key: "conch.merge.type", str: q.Name},
		{key: "conch.merge.base.file", str: filepath.Base(basePath)},
		{key: "conch.merge.base.sha256", str: baseSHA},
		{key: "conch.merge.lora.count", u32: uint32(len(loras)), typ: 1},
	}
	for i, l := range loras {
		pre := "conch.merge.lora." + strconv.Itoa(i) + "."
		kvs = append(kvs,
			mergeKV{key: pre + "file", str: filepath.Base(l.Path)},
			mergeKV{key: pre + "sha256", str: l.sha},
			mergeKV{key: pre + "rank", u32: uint32(l.rank), typ: 1},
			mergeKV{key: pre + "alpha", f32: l.alpha, typ: 2},
			mergeKV{key: pre + "scale", f32: l.Scale, typ: 2},
		)
	}
	return kvs
}

type mergeKV struct {
	key string
	typ int // 0 string, 1 u32, 2 f32
	str string
	u32 uint32
	f32 float32
}

// writerSlice, when positive, is how many values conch_merge converts at a time instead
// of its default: tests make it small to cross slice boundaries on tiny models.
var writerSlice int64

// writeJob is one run of conch_merge: base + adapters (none for a plain conversion)
// written to out with the given tensor types.
type writeJob struct {
	base, out string
	loras     []mergeLoRA
	kvs       []mergeKV
	types     []uint32 // per base tensor, in file order
	fileType  int      // general.file_type to record; -1 keeps the base's
	threads   int
	progress  func(done, total int)
}

// writeError turns a failed conch_merge into one line for the user: a full disk is
// named as such, cancellation is reported as ctx's error.
func writeError(ctx context.Context, err error, final, op string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	msg := err.Error()
	for _, pre := range []string{"write: ", "sync: ", "close: "} {
		if rest, ok := strings.CutPrefix(msg, pre); ok {
			return fmt.Errorf("writing %s failed: %s (the partial output was removed)", final, rest)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// runWriter calls conch_merge, reporting progress and passing on cancellation.
func runWriter(ctx context.Context, j writeJob) error {
	var strs []*C.char
	cstr := func(s string) *C.char {
		c := C.CString(s)
		strs = append(strs, c)
		return c
	}
	defer func() {
		for _, c := range strs {
			C.free(unsafe.Pointer(c))
		}
	}()
	// Everything the native side reads lives in C memory: cgo forbids handing C a Go
	// pointer to memory that holds Go pointers.
	params := (*C.struct_conch_merge_params)(C.calloc(1, C.sizeof_struct_conch_merge_params))
	defer C.free(unsafe.Pointer(params))
	if n := len(j.loras); n > 0 {
		cl := unsafe.Slice((*C.struct_conch_merge_lora)(C.calloc(C.size_t(n), C.sizeof_struct_conch_merge_lora)), n)
		defer C.free(unsafe.Pointer(&cl[0]))
		for i, l := range j.loras {
			cl[i].path = cstr(l.Path)
			cl[i].scale = C.float(l.Scale)
		}
		params.loras = &cl[0]
		params.n_loras = C.int(n)
	}
	if n := len(j.kvs); n > 0 {
		ck := unsafe.Slice((*C.struct_conch_merge_kv)(C.calloc(C.size_t(n), C.sizeof_struct_conch_merge_kv)), n)
		defer C.free(unsafe.Pointer(&ck[0]))
		for i, kv := range j.kvs {
			ck[i].key = cstr(kv.key)
			ck[i]._type = C.int(kv.typ)
			ck[i].str = cstr(kv.str)
			ck[i].u32 = C.uint32_t(kv.u32)
			ck[i].f32 = C.float(kv.f32)
		}
		params.kvs = &ck[0]
		params.n_kvs = C.int(n)
	}
	if len(j.types) == 0 {
		return errors.New("the model holds no tensors")
	}
	ct := unsafe.Slice((*C.int32_t)(C.calloc(C.size_t(len(j.types)), 4)), len(j.types))
	defer C.free(unsafe.Pointer(&ct[0]))
	for i, t := range j.types {
		ct[i] = C.int32_t(t)
	}
	prog := (*C.struct_conch_merge_progress)(C.calloc(1, C.sizeof_struct_conch_merge_progress))
	defer C.free(unsafe.Pointer(prog))
	threads := j.threads
	if threads <= 0 {
		threads = DefaultThreads()
	}
	params.base_path = cstr(j.base)
	params.out_path = cstr(j.out)
	params.tensor_types = &ct[0]
	params.n_tensor_types = C.int(len(j.types))
	params.file_type = C.int(j.fileType)
	params.n_threads = C.int(threads)
	params.progress = prog
	params.slice_values = C.int64_t(writerSlice)

	done := (*int32)(unsafe.Pointer(&prog.done))
	total := (*int32)(unsafe.Pointer(&prog.total))
	cancel := (*int32)(unsafe.Pointer(&prog.cancel))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				atomic.StoreInt32(cancel, 1)
				return
			case <-stop:
				return
			case <-tick.C:
				if j.progress != nil {
					if n := atomic.LoadInt32(total); n > 0 {
						j.progress(int(atomic.LoadInt32(done)), int(n))
					}
				}
			}
		}
	}()

	runtime.LockOSThread()
	C.conch_clear_error()
	rc := C.conch_merge(params)
	msg := C.GoString(C.conch_last_error())
	C.conch_clear_error()
	runtime.UnlockOSThread()
	close(stop)
	wg.Wait()
	if rc != 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		if msg == "" {
			msg = "unknown error"
		}
		return errors.New(msg)
	}
	if j.progress != nil {
		j.progress(int(atomic.LoadInt32(total)), int(atomic.LoadInt32(total)))
	}
	return nil
}

// hashFiles returns the hex sha256 of each file, hashed in parallel.
func hashFiles(ctx context.Context, paths []string) ([]string, error) {
	out := make([]string, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	for i, path := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(path)
			if err != nil {
				errs[i] = err
				return
			}
			defer f.Close()
			h := sha256.New()
			if _, err := io.Copy(h, &ctxReader{ctx: ctx, r: f}); err != nil {
				errs[i] = fmt.Errorf("read %s: %w", path, err)
				return
			}
			out[i] = hex.EncodeToString(h.Sum(nil))
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// ctxReader stops a long read when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func isFloatType(t uint32) bool {
	return t == C.GGML_TYPE_F32 || t == C.GGML_TYPE_F16 || t == C.GGML_TYPE_BF16
}

// dequantisable reports whether ggml can turn type t into F32.
func dequantisable(t uint32) bool {
	if t >= C.GGML_TYPE_COUNT {
		return false
	}
	return t == C.GGML_TYPE_F32 || C.ggml_get_type_traits(C.enum_ggml_type(t)).to_float != nil
}

// typeBlock and typeRowSize are ggml's block size and row size for a type.
func typeBlock(t uint32) int {
	if t >= C.GGML_TYPE_COUNT {
		return 0
	}
	return int(C.ggml_blck_size(C.enum_ggml_type(t)))
}

func typeRowSize(t uint32, n int64) int64 {
	return int64(C.ggml_row_size(C.enum_ggml_type(t), C.int64_t(n)))
}
