package llama

// #include <stdlib.h>
// #include "ggml.h"
// #include "conch.h"
//
// static int conch_type_to_float(int t) {
//     if (t == GGML_TYPE_F32) return 1;
//     if (t < 0 || t >= GGML_TYPE_COUNT || ggml_blck_size((enum ggml_type)t) == 0) return 0;
//     return ggml_get_type_traits((enum ggml_type)t)->to_float != NULL;
// }
import "C"

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"
)

// TrainParams says how to train a LoRA adapter on a base model.
type TrainParams struct {
	Rank        int      // LoRA rank r (default 8)
	Alpha       float32  // LoRA alpha; scale = Alpha/Rank (default 16)
	Targets     []string // subset of "q","k","v","o","gate","up","down","lm_head" (empty = the seven projections; lm_head needs an untied output.weight)
	MaxSeqLen   int      // longest sequence Accumulate/Eval will get (graph and memory sizing; default 512)
	ComputeType string   // how frozen weights are held: "f32" (reference; "" = f32), "f16", "bf16", "q8_0", "base" (see NewTrainer)
	Threads     int      // 0 = DefaultThreads()
	GPULayers   int      // run training on the GPU when > 0 or -1 (needs a CUDA build); 0 = CPU
	Seed        uint64   // LoRA A init
	// NEFTuneAlpha > 0 adds uniform noise of ±NEFTuneAlpha/√(T·n_embd) to the embeddings
	// of each training sequence (NEFTune), drawn from the seed SetNoiseSeed gave last.
	// Eval and Logits see none.
	NEFTuneAlpha float32
	// LRRatioB (LoRA+) multiplies the learning rate of the B halves (0 or 1: plain LoRA).
	LRRatioB float32
	// Checkpoint keeps only each layer's input from the forward pass and recomputes the
	// layer during the backward pass (gradient checkpointing): about a third more
	// compute for the activation memory of one layer instead of all of them.
	Checkpoint bool
	// AdamW; zero values mean 0.9, 0.999, 1e-8.
	Beta1, Beta2, Eps float32
}

// maxTrainSeqLen bounds MaxSeqLen: attention scores alone are n_head*T*T floats per layer.
const maxTrainSeqLen = 1 << 15

func (p TrainParams) resolved() (TrainParams, uint32, error) {
	if p.Rank == 0 {
		p.Rank = 8
	}
	if p.Alpha == 0 {
		p.Alpha = 16
	}
	if p.MaxSeqLen == 0 {
		p.MaxSeqLen = 512
	}
	if p.ComputeType == "" {
		p.ComputeType = "f32"
	}
	if p.Threads <= 0 {
		p.Threads = DefaultThreads()
	}
	if p.Beta1 == 0 {
		p.Beta1 = 0.9
	}
	if p.Beta2 == 0 {
		p.Beta2 = 0.999
	}
	if p.Eps == 0 {
		p.Eps = 1e-8
	}
	switch {
	case p.Rank < 1 || p.Rank > 4096:
		return p, 0, fmt.Errorf("LoRA rank %d out of range (1..4096)", p.Rank)
	case !finite32(p.Alpha) || p.Alpha <= 0:
		return p, 0, fmt.Errorf("LoRA alpha %v must be positive", p.Alpha)
	case p.MaxSeqLen < 1 || p.MaxSeqLen > maxTrainSeqLen:
		return p, 0, fmt.Errorf("max sequence length %d out of range (1..%d)", p.MaxSeqLen, maxTrainSeqLen)
	case p.Threads > MaxThreads:
		return p, 0, fmt.Errorf("%d threads is too many (at most %d)", p.Threads, MaxThreads)
	case !(p.Beta1 >= 0 && p.Beta1 < 1) || !(p.Beta2 >= 0 && p.Beta2 < 1):
		return p, 0, fmt.Errorf("AdamW betas (%v, %v) must be in [0, 1)", p.Beta1, p.Beta2)
	case !finite32(p.Eps) || p.Eps <= 0:
		return p, 0, fmt.Errorf("AdamW epsilon %v must be positive", p.Eps)
	case !finite32(p.NEFTuneAlpha) || p.NEFTuneAlpha < 0:
		return p, 0, fmt.Errorf("NEFTune alpha %v must not be negative", p.NEFTuneAlpha)
	case !finite32(p.LRRatioB) || p.LRRatioB < 0:
		return p, 0, fmt.Errorf("LoRA+ learning-rate ratio %v must not be negative", p.LRRatioB)
	case p.GPULayers < -1:
		return p, 0, fmt.Errorf("GPU layers %d: use -1 (all), 0 (CPU) or a positive count", p.GPULayers)
	}
	if _, ok := computeTypes[p.ComputeType]; !ok {
		return p, 0, fmt.Errorf("compute type %q is not supported (f32, f16, bf16, q8_0, base)", p.ComputeType)
	}
	mask, err := parseTargets(p.Targets)
	return p, mask, err
}

// computeTypes are the ways frozen weights can be held, as conch.h numbers them.
var computeTypes = map[string]C.int{
	"f32": C.CONCH_TRAIN_F32, "f16": C.CONCH_TRAIN_F16, "bf16": C.CONCH_TRAIN_BF16, "q8_0": C.CONCH_TRAIN_Q8_0,
	"base": C.CONCH_TRAIN_BASE,
}

func finite32(f float32) bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }

// typeConvertible reports whether ggml can dequantise tensors of ggml type t.
func typeConvertible(t uint32) bool { return t < 1<<16 && C.conch_type_to_float(C.int(t)) != 0 }

// cParams builds the C parameter blocks; the path string must be freed by the caller.
func cTrainParams(path string, p TrainParams, mask uint32, hp trainHParams) (C.struct_conch_train_params, C.struct_conch_train_hparams) {
	var cp C.struct_conch_train_params
	cp.model_path = C.CString(path)
	cp.rank = C.int(p.Rank)
	cp.alpha = C.float(p.Alpha)
	cp.targets = C.uint32_t(mask)
	cp.max_seq_len = C.int(p.MaxSeqLen)
	cp.compute_type = computeTypes[p.ComputeType]
	cp.threads = C.int(p.Threads)
	if p.GPULayers != 0 {
		cp.use_gpu = 1
	}
	cp.seed = C.uint64_t(p.Seed)
	if p.Checkpoint {
		cp.checkpoint = 1
	}
	cp.lr_ratio_b = C.float(p.LRRatioB)
	cp.neftune_alpha = C.float(p.NEFTuneAlpha)
	cp.beta1, cp.beta2, cp.eps = C.float(p.Beta1), C.float(p.Beta2), C.float(p.Eps)

	var ch C.struct_conch_train_hparams
	ch.arch = C.int(hp.arch)
	ch.n_layer, ch.n_embd, ch.n_ff = C.int(hp.nLayer), C.int(hp.nEmbd), C.int(hp.nFF)
	ch.n_head, ch.n_head_kv, ch.head_dim, ch.n_vocab = C.int(hp.nHead), C.int(hp.nHeadKV), C.int(hp.headDim), C.int(hp.nVocab)
	ch.rms_eps = C.float(hp.rmsEps)
	ch.rope_mode = C.int(hp.ropeMode)
	ch.rope_freq_base, ch.rope_freq_scale, ch.rope_attn_factor = C.float(hp.ropeFreqBase), C.float(hp.ropeFreqScale), C.float(hp.ropeAttnFactor)
	ch.n_ctx_orig = C.int(hp.nCtxOrig)
	ch.kq_scale = C.float(hp.kqScale)
	return cp, ch
}

// checkTrainSetup validates everything NewTrainer and EstimateTrainMemory hand to C.
func checkTrainSetup(info *GGUF, p TrainParams) (TrainParams, uint32, trainHParams, error) {
	p, mask, err := p.resolved()
	if err != nil {
		return p, 0, trainHParams{}, err
	}
	if p.GPULayers != 0 && GPUCount() == 0 {
		return p, 0, trainHParams{}, errors.New("training on the GPU needs a CUDA build and a GPU (set GPULayers to 0 to train on the CPU)")
	}
	hp, err := trainHParamsOf(info)
	if err != nil {
		return p, 0, hp, fmt.Errorf("%s: %w", info.Path, err)
	}
	if p.ComputeType == "q8_0" {
		// Q8_0 packs rows in blocks of 32: every matrix and its transpose need rows of
		// a multiple of 32 values.
		for _, d := range []int{hp.nEmbd, hp.nFF, hp.nVocab, hp.headDim * hp.nHead, hp.headDim * hp.nHeadKV} {
			if d%32 != 0 {
				return p, 0, hp, fmt.Errorf("compute type q8_0 needs model dimensions that are multiples of 32 (this model has %d): use f16", d)
			}
		}
	}
	if mask&targetOutputBit != 0 {
		if _, ok := info.Tensor("output.weight"); !ok {
			return p, 0, hp, errors.New("LoRA on lm_head needs a model with its own output.weight; this model ties its output head to token_embd.weight (drop lm_head from the targets)")
		}
	}
	if int64(hp.nVocab)*int64(p.MaxSeqLen) > 1<<31 {
		return p, 0, hp, fmt.Errorf("max sequence length %d is too long for a vocabulary of %d", p.MaxSeqLen, hp.nVocab)
	}
	return p, mask, hp, nil
}

// EstimateTrainMemory is how many bytes a Trainer with these settings would hold:
// frozen weights in the compute type, LoRA tensors with gradients and AdamW moments,
// and the compute buffer for a MaxSeqLen sequence (with Checkpoint, the largest of its
// graphs plus the kept layer inputs), planned without allocating anything.
// It reads only the file's header. Settings NewTrainer would refuse give 0.
func EstimateTrainMemory(info *GGUF, p TrainParams) uint64 {
	ensureInit()
	p, mask, hp, err := checkTrainSetup(info, p)
	if err != nil {
		return 0
	}
	cp, ch := cTrainParams(info.Path, p, mask, hp)
	defer C.free(unsafe.Pointer(cp.model_path))
	var bytes C.uint64_t
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if C.conch_train_estimate(&cp, &ch, &bytes) != 0 {
		C.conch_clear_error()
		return 0
	}
	return uint64(bytes)
}

// Trainer trains a LoRA adapter on a base model with ggml: a forward pass that
// reproduces llama.cpp's, the loss on supervised positions, ggml's backward pass and
// AdamW. It is not safe for concurrent use.
type Trainer struct {
	c     *C.conch_trainer
	p     TrainParams
	hp    trainHParams
	names []string
	index map[string]int
	sizes []int
}

// NewTrainer prepares LoRA training on m. The trainer reads the weights from m's file
// itself, so m may have been loaded with VocabOnly.
//
// ComputeType "f32" dequantises every frozen matrix to F32 and lets ggml differentiate
// through it: the reference, 4 bytes per weight. "f16", "bf16" and "q8_0" hold each
// matrix and its transpose in that type (4, 4 and 2.1 bytes per weight in all) and
// compute dX = Wᵀ·dY as a matrix product: faster, with activations and gradients
// rounded to that type inside those products (llama.cpp rounds the same way when it
// runs such a model). "base" keeps each matrix in the file's own type, so a Q4_K_M
// model trains as it will run (about 1.2 bytes per weight with the transposes), and
// its transpose in that type too where its rows fill the type's blocks (else q8_0 or
// f16); F32 matrices of the file go the reference way.
func NewTrainer(m *Model, p TrainParams) (*Trainer, error) {
	if m == nil || m.Info == nil {
		return nil, errors.New("no model")
	}
	ensureInit()
	p, mask, hp, err := checkTrainSetup(m.Info, p)
	if err != nil {
		return nil, err
	}
	cp, ch := cTrainParams(m.Info.Path, p, mask, hp)
	defer C.free(unsafe.Pointer(cp.model_path))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	var c *C.conch_trainer
	if C.conch_train_new(&cp, &ch, &c) != 0 {
		return nil, nativeError("create trainer")
	}
	t := &Trainer{c: c, p: p, hp: hp, index: map[string]int{}}
	n := int(C.conch_train_n_tensors(c))
	for i := 0; i < n; i++ {
		name := C.GoString(C.conch_train_tensor_name(c, C.int(i)))
		t.names = append(t.names, name)
		t.index[name] = i
		t.sizes = append(t.sizes, int(C.conch_train_tensor_size(c, C.int(i))))
	}
	return t, nil
}

// Close frees the trainer. It is safe to call twice.
func (t *Trainer) Close() {
	if t != nil && t.c != nil {
		C.conch_train_free(t.c)
		t.c = nil
	}
}

// Settings returns the trainer's parameters with defaults filled in.
func (t *Trainer) Settings() TrainParams { return t.p }

// Memory is the number of bytes the trainer holds (compare EstimateTrainMemory).
func (t *Trainer) Memory() uint64 { return uint64(C.conch_train_memory(t.c)) }

// VocabSize is the number of logits per position.
func (t *Trainer) VocabSize() int { return t.hp.nVocab }

func (t *Trainer) checkSeq(tokens, labels []Token, withLabels bool) error {
	if t.c == nil {
		return errors.New("trainer is closed")
	}
	if len(tokens) == 0 {
		return errors.New("empty sequence")
	}
	if len(tokens) > t.p.MaxSeqLen {
		return fmt.Errorf("sequence of %d tokens is longer than the trainer's MaxSeqLen %d", len(tokens), t.p.MaxSeqLen)
	}
	v := Token(t.hp.nVocab)
	for i, tok := range tokens {
		if tok < 0 || tok >= v {
			return fmt.Errorf("token %d at position %d is outside the vocabulary (%d)", tok, i, v)
		}
	}
	if !withLabels {
		return nil
	}
	if len(labels) != len(tokens) {
		return fmt.Errorf("%d labels for %d tokens", len(labels), len(tokens))
	}
	for i, l := range labels {
		if l < -1 || l >= v {
			return fmt.Errorf("label %d at position %d is outside the vocabulary (%d; -1 masks)", l, i, v)
		}
	}
	return nil
}

func (t *Trainer) run(mode int, tokens, labels []Token) (float64, int, error) {
	if err := t.checkSeq(tokens, labels, true); err != nil {
		return 0, 0, err
	}
	var loss C.double
	var n C.int
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	rc := C.conch_train_run(t.c, C.int(mode), (*C.int32_t)(unsafe.Pointer(&tokens[0])), (*C.int32_t)(unsafe.Pointer(&labels[0])),
		C.int(len(tokens)), &loss, &n)
	runtime.KeepAlive(tokens)
	runtime.KeepAlive(labels)
	if rc != 0 {
		return 0, 0, nativeError("training step")
	}
	return float64(loss), int(n), nil
}

// Accumulate runs one sequence forward and backward. labels[i] is the token position i
// should predict, or -1 for positions without loss. It adds d(sum of cross entropy over
// supervised positions)/dθ to the gradient accumulators and returns that loss sum and the
// number of supervised positions; with none it does nothing and returns 0, 0, nil.
func (t *Trainer) Accumulate(tokens, labels []Token) (lossSum float64, n int, err error) {
	return t.run(0, tokens, labels)
}

// Eval is Accumulate without the backward pass.
func (t *Trainer) Eval(tokens, labels []Token) (lossSum float64, n int, err error) {
	return t.run(1, tokens, labels)
}

// Step applies AdamW to every LoRA tensor with the gradient g = acc/N, where acc is the
// sum Accumulate built since the last Step and N the supervised positions it counted.
// It returns ||g|| before clipping; when maxGradNorm > 0 and the norm exceeds it, g is
// scaled to that norm. Weight decay is decoupled (p -= lr*wd*p) and the moments are
// bias-corrected, as in PyTorch's AdamW; B halves use lr*LRRatioB when that is set
// (LoRA+). The accumulators are then cleared. With no
// supervised positions since the last Step it does nothing and returns 0.
func (t *Trainer) Step(lr, weightDecay, maxGradNorm float32) (gradNorm float64, err error) {
	if t.c == nil {
		return 0, errors.New("trainer is closed")
	}
	if !finite32(lr) || lr < 0 || !finite32(weightDecay) || weightDecay < 0 || !finite32(maxGradNorm) || maxGradNorm < 0 {
		return 0, fmt.Errorf("bad step settings: lr %v, weight decay %v, max grad norm %v", lr, weightDecay, maxGradNorm)
	}
	var norm C.double
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	if C.conch_train_step(t.c, C.float(lr), C.float(weightDecay), C.float(maxGradNorm), &norm) != 0 {
		return 0, nativeError("optimizer step")
	}
	return float64(norm), nil
}

// SetNoiseSeed sets the seed of the NEFTune noise (TrainParams.NEFTuneAlpha) for the
// following Accumulate calls. Seeding each sequence from where it stands in the run
// (step, place in the step) makes a resumed run draw the noise the straight one did.
func (t *Trainer) SetNoiseSeed(seed uint64) {
	if t.c != nil {
		C.conch_train_set_noise_seed(t.c, C.uint64_t(seed))
	}
}

// StepCount is the number of optimizer steps taken (restored by LoadState).
func (t *Trainer) StepCount() int { return int(C.conch_train_step_count(t.c)) }

// Logits runs the training graph forward on tokens and returns the logits of every
// position, row-major [len(tokens)][vocab].
func (t *Trainer) Logits(tokens []Token) ([]float32, error) {
	if err := t.checkSeq(tokens, nil, false); err != nil {
		return nil, err
	}
	out := make([]float32, len(tokens)*t.hp.nVocab)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	if C.conch_train_logits(t.c, (*C.int32_t)(unsafe.Pointer(&tokens[0])), C.int(len(tokens)), (*C.float)(unsafe.Pointer(&out[0]))) != 0 {
		return nil, nativeError("forward")
	}
	runtime.KeepAlive(tokens)
	return out, nil
}

// Params lists the LoRA tensors by adapter name (blk.0.attn_q.weight.lora_a, ...).
func (t *Trainer) Params() []string { return append([]string(nil), t.names...) }

// Get returns a copy of a LoRA tensor's values (nil for an unknown name).
func (t *Trainer) Get(name string) []float32 {
	i, ok := t.index[name]
	if !ok || t.c == nil {
		return nil
	}
	out := make([]float32, t.sizes[i])
	C.conch_train_get(t.c, C.int(i), (*C.float)(unsafe.Pointer(&out[0])))
	return out
}

// Set replaces a LoRA tensor's values (AdamW moments are kept).
func (t *Trainer) Set(name string, v []float32) error {
	i, ok := t.index[name]
	if !ok {
		return fmt.Errorf("no LoRA tensor %q", name)
	}
	if t.c == nil {
		return errors.New("trainer is closed")
	}
	if len(v) != t.sizes[i] {
		return fmt.Errorf("LoRA tensor %s has %d values, got %d", name, t.sizes[i], len(v))
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	if C.conch_train_set(t.c, C.int(i), (*C.float)(unsafe.Pointer(&v[0]))) != 0 {
		return nativeError("set " + name)
	}
	return nil
}

// Grad returns the gradient accumulated for a LoRA tensor since the last Step: the
// sum over Accumulate calls of d(loss sum)/dθ (nil for an unknown name).
func (t *Trainer) Grad(name string) []float32 {
	i, ok := t.index[name]
	if !ok || t.c == nil {
		return nil
	}
	out := make([]float32, t.sizes[i])
	if C.conch_train_grad(t.c, C.int(i), (*C.float)(unsafe.Pointer(&out[0]))) != 0 {
		C.conch_clear_error()
		return nil
	}
	return out
}

// reservedAdapterKey reports keys SaveAdapter writes itself or that gguf treats specially.
func reservedAdapterKey(k string) bool {
	return k == "general.type" || k == "general.architecture" || k == "general.alignment" || strings.HasPrefix(k, "adapter.")
}

// SaveAdapter writes the adapter as llama.cpp's LoRA GGUF (general.type=adapter,
// adapter.type=lora, adapter.lora.alpha, F32 tensors <weight>.lora_a [n_in, r] and
// .lora_b [r, n_out]). Each meta entry is stored as a string, under "conch.train.<key>"
// unless the key already has a dot. The file appears atomically.
func (t *Trainer) SaveAdapter(path string, meta map[string]string) error {
	if t.c == nil {
		return errors.New("trainer is closed")
	}
	keys := make([]*C.char, 0, len(meta))
	vals := make([]*C.char, 0, len(meta))
	defer func() {
		for i := range keys {
			C.free(unsafe.Pointer(keys[i]))
			C.free(unsafe.Pointer(vals[i]))
		}
	}()
	for k, v := range meta {
		if k == "" || strings.ContainsRune(k, 0) || strings.ContainsRune(v, 0) {
			return fmt.Errorf("adapter metadata %q: empty key or NUL byte", k)
		}
		if !strings.Contains(k, ".") {
			k = "conch.train." + k
		}
		if reservedAdapterKey(k) {
			return fmt.Errorf("adapter metadata key %q is reserved", k)
		}
		keys = append(keys, C.CString(k))
		vals = append(vals, C.CString(v))
	}
	return writeAtomic(path, func(tmp *C.char) C.int {
		var kp, vp **C.char
		if len(keys) > 0 {
			// C arrays of C pointers: Go memory holding only C pointers may be passed.
			kp, vp = &keys[0], &vals[0]
		}
		return C.conch_train_save_adapter(t.c, tmp, kp, vp, C.int(len(keys)))
	}, "save adapter")
}

// SaveState writes everything needed to resume training bit-exactly (LoRA tensors,
// AdamW moments, step count, pending gradients). The file appears atomically.
func (t *Trainer) SaveState(path string) error {
	if t.c == nil {
		return errors.New("trainer is closed")
	}
	return writeAtomic(path, func(tmp *C.char) C.int { return C.conch_train_save_state(t.c, tmp) }, "save training state")
}

// LoadState restores a state saved by SaveState for the same model, rank, alpha and
// targets.
func (t *Trainer) LoadState(path string) error {
	if t.c == nil {
		return errors.New("trainer is closed")
	}
	info, err := Inspect(path)
	if err != nil {
		return err
	}
	if info.String("general.type") != "conch.train.state" {
		return fmt.Errorf("%s is not a conch training state", path)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	if C.conch_train_load_state(t.c, cpath) != 0 {
		return nativeError("load training state " + path)
	}
	return nil
}

// writeAtomic has write produce a temporary file beside path, flushes it and renames
// it over path, so that readers see the old file or the complete new one.
func writeAtomic(path string, write func(tmp *C.char) C.int, what string) error {
	dir := filepath.Dir(path)
	tmp := filepath.Join(dir, fmt.Sprintf(".%s.tmp-%d", filepath.Base(path), os.Getpid()))
	ctmp := C.CString(tmp)
	defer C.free(unsafe.Pointer(ctmp))
	runtime.LockOSThread()
	C.conch_clear_error()
	rc := write(ctmp)
	var err error
	if rc != 0 {
		err = nativeError(what)
	}
	runtime.UnlockOSThread()
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", what, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
