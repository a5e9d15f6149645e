package llama

// #include <stdlib.h>
// #include "llama.h"
// #include "conch.h"
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"
)

// ContextParams says how to build an inference context.
type ContextParams struct {
	NCtx      int  // context size in tokens, shared by all sequences (0: the model's, capped at 4096)
	NBatch    int  // most tokens per Decode (0: 512)
	NSeq      int  // parallel sequences (0: 1)
	Threads   int  // 0: physical cores
	FlashAttn bool // use flash attention
	KVF32     bool // keep the KV cache in F32 (exact parity tests); default F16
	Embedding bool
}

// Context is a llama.cpp context: a KV cache and compute buffers for one model.
// It is not safe for concurrent use.
type Context struct {
	c     *C.struct_llama_context
	model *Model
	nCtx  int
	nBat  int
	nSeq  int
	pool  *C.struct_ggml_threadpool // CPU threads, reused by every decode
}

// DefaultThreads is the number of physical cores (estimated as logical/2 above 2).
func DefaultThreads() int {
	n := runtime.NumCPU()
	if n > 2 {
		n /= 2
	}
	return max(n, 1)
}

// NewContext creates a context for m.
func NewContext(m *Model, p ContextParams) (*Context, error) {
	if m == nil || m.c == nil {
		return nil, errors.New("model is closed")
	}
	cp := C.llama_context_default_params()
	if p.NCtx <= 0 {
		p.NCtx = min(m.TrainContext(), 4096)
	}
	if p.NBatch <= 0 {
		p.NBatch = 512
	}
	if p.NSeq <= 0 {
		p.NSeq = 1
	}
	if p.NSeq > int(C.llama_max_parallel_sequences()) {
		return nil, fmt.Errorf("at most %d parallel sequences", int(C.llama_max_parallel_sequences()))
	}
	if p.Threads <= 0 {
		p.Threads = DefaultThreads()
	}
	cp.n_ctx = C.uint32_t(p.NCtx)
	cp.n_batch = C.uint32_t(p.NBatch)
	cp.n_ubatch = C.uint32_t(p.NBatch)
	cp.n_seq_max = C.uint32_t(p.NSeq)
	cp.n_threads = C.int32_t(p.Threads)
	cp.n_threads_batch = C.int32_t(p.Threads)
	cp.no_perf = true
	cp.kv_unified = true
	cp.embeddings = C.bool(p.Embedding)
	if p.FlashAttn {
		cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_ENABLED
	} else {
		cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
	}
	if p.KVF32 {
		cp.type_k = C.GGML_TYPE_F32
		cp.type_v = C.GGML_TYPE_F32
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	c := C.llama_init_from_model(m.c, cp)
	if c == nil {
		return nil, nativeError("create context")
	}
	ctx := &Context{c: c, model: m, nCtx: int(C.llama_n_ctx(c)), nBat: p.NBatch, nSeq: p.NSeq}
	if err := ctx.SetThreads(p.Threads); err != nil {
		ctx.Close()
		return nil, err
	}
	return ctx, nil
}

// Close frees the context.
func (c *Context) Close() {
	if c != nil && c.c != nil {
		C.llama_free(c.c)
		c.c = nil
		C.conch_threads_free(c.pool)
		c.pool = nil
	}
}

// Model is the model this context runs.
func (c *Context) Model() *Model { return c.model }

// NCtx is the context size in tokens; NBatch the most tokens per Decode; NSeq the sequence slots.
func (c *Context) NCtx() int   { return c.nCtx }
func (c *Context) NBatch() int { return c.nBat }
func (c *Context) NSeq() int   { return c.nSeq }

// MaxThreads is the most CPU threads ggml can run a graph on.
const MaxThreads = C.GGML_MAX_N_THREADS

// SetThreads sets the number of CPU threads for generation and batch processing (0: the
// physical cores). The context keeps one pool of that many threads for all its decodes.
func (c *Context) SetThreads(n int) error {
	if n <= 0 {
		n = DefaultThreads()
	}
	if n > MaxThreads {
		return fmt.Errorf("%d threads is too many (at most %d)", n, MaxThreads)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	pool := C.conch_threads_attach(c.c, C.int(n))
	if pool == nil {
		return nativeError("start CPU threads")
	}
	C.conch_threads_free(c.pool)
	c.pool = pool
	C.llama_set_n_threads(c.c, C.int32_t(n), C.int32_t(n))
	return nil
}

// ErrNoKVSlot means the KV cache has no room for the batch.
var ErrNoKVSlot = errors.New("the context is full (no KV cache slot for the batch)")

// Decode runs the model on a batch. Logits are then available for the tokens the batch
// asked for.
func (c *Context) Decode(b *Batch) error {
	if b.n == 0 {
		return errors.New("empty batch")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	b.c.n_tokens = C.int32_t(b.n)
	rc := C.llama_decode(c.c, b.c)
	switch {
	case rc == 0:
		return nil
	case rc == 1:
		return ErrNoKVSlot
	case rc == 2:
		return errors.New("decode aborted")
	default:
		return nativeError(fmt.Sprintf("decode failed (%d)", int(rc)))
	}
}

// Logits returns the logits for the i-th token of the last batch that asked for logits
// (i as in that batch; -1 for the last one). The slice is a copy.
func (c *Context) Logits(i int) []float32 {
	p := C.llama_get_logits_ith(c.c, C.int32_t(i))
	if p == nil {
		return nil
	}
	n := c.model.VocabSize()
	return append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(p)), n)...)
}

// Argmax is the token with the highest logit at batch index i (the first of equals, as
// greedy sampling picks), or -1 when i has no logits. It reads the logits in place:
// greedy decoding without the sampler chain's copy of the whole vocabulary.
func (c *Context) Argmax(i int) Token {
	p := C.llama_get_logits_ith(c.c, C.int32_t(i))
	if p == nil {
		return -1
	}
	l := unsafe.Slice((*float32)(unsafe.Pointer(p)), c.model.VocabSize())
	best := 0
	for j, v := range l {
		if v > l[best] {
			best = j
		}
	}
	return Token(best)
}

// logitsPtr is Logits without the copy, for the sampler.
func (c *Context) logitsPtr(i int) *C.float { return C.llama_get_logits_ith(c.c, C.int32_t(i)) }

// ClearKV forgets every sequence.
func (c *Context) ClearKV() { C.llama_memory_clear(C.llama_get_memory(c.c), true) }

// RemoveSeq forgets positions [from, to) of sequence seq (to < 0: to the end; seq < 0: all).
func (c *Context) RemoveSeq(seq, from, to int) bool {
	return bool(C.llama_memory_seq_rm(C.llama_get_memory(c.c), C.llama_seq_id(seq), C.llama_pos(from), C.llama_pos(to)))
}

// CopySeq makes positions [from, to) of sequence src part of sequence dst as well (to < 0:
// to the end): a prompt prefix computed once serves several sequences. With the context's
// unified KV cache the cells are shared, nothing is copied or computed. It reports false
// for sequence ids outside the context's.
func (c *Context) CopySeq(src, dst, from, to int) bool {
	if src < 0 || src >= c.nSeq || dst < 0 || dst >= c.nSeq {
		return false
	}
	C.llama_memory_seq_cp(C.llama_get_memory(c.c), C.llama_seq_id(src), C.llama_seq_id(dst), C.llama_pos(from), C.llama_pos(to))
	return true
}

// SeqPosMax is the largest position stored for seq, or -1 when it is empty.
func (c *Context) SeqPosMax(seq int) int {
	return int(C.llama_memory_seq_pos_max(C.llama_get_memory(c.c), C.llama_seq_id(seq)))
}

// Batch is a set of tokens to decode, each with a position, a sequence and whether
// its logits are wanted.
type Batch struct {
	c   C.struct_llama_batch
	cap int
	n   int
}

// NewBatch allocates a batch for up to n tokens.
func NewBatch(n int) *Batch {
	return &Batch{c: C.llama_batch_init(C.int32_t(n), 0, 1), cap: n}
}

// Free releases the batch.
func (b *Batch) Free() {
	if b.cap > 0 {
		C.llama_batch_free(b.c)
		b.cap = 0
	}
}

// Len is the number of tokens in the batch; Cap how many fit.
func (b *Batch) Len() int { return b.n }
func (b *Batch) Cap() int { return b.cap }

// Clear empties the batch.
func (b *Batch) Clear() { b.n = 0 }

// Add appends a token at position pos of sequence seq. It returns the token's index in
// the batch (for Logits), or -1 if the batch is full.
func (b *Batch) Add(t Token, pos, seq int, logits bool) int {
	if b.n >= b.cap {
		return -1
	}
	i := b.n
	unsafe.Slice(b.c.token, b.cap)[i] = C.llama_token(t)
	unsafe.Slice(b.c.pos, b.cap)[i] = C.llama_pos(pos)
	unsafe.Slice(b.c.n_seq_id, b.cap)[i] = 1
	*unsafe.Slice(b.c.seq_id, b.cap)[i] = C.llama_seq_id(seq)
	var l C.int8_t
	if logits {
		l = 1
	}
	unsafe.Slice(b.c.logits, b.cap)[i] = l
	b.n++
	return i
}
