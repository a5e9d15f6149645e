package llama

// #include <stdlib.h>
// #include "llama.h"
// #include "conch.h"
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"
)

// Token is a vocabulary id.
type Token = int32

// ModelParams says how to load a model.
type ModelParams struct {
	GPULayers int  // layers to offload to the GPU (-1 all); ignored on a CPU build
	NoMmap    bool // read the file into memory instead of mapping it
	VocabOnly bool // load only the tokenizer
}

// Model is a loaded GGUF model. It is safe for concurrent use by several Contexts;
// Close it after every Context made from it is closed.
type Model struct {
	c     *C.struct_llama_model
	vocab *C.struct_llama_vocab
	Info  *GGUF
}

// LoadModel validates path in Go and then loads it with llama.cpp.
func LoadModel(path string, p ModelParams) (*Model, error) {
	ensureInit()
	info, err := Inspect(path)
	if err != nil {
		return nil, err
	}
	if p.VocabOnly {
		if info.IsAdapter() {
			return nil, fmt.Errorf("%s: this is a LoRA adapter, not a model", path)
		}
	} else if err := info.checkModel(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	mp := C.llama_model_default_params()
	mp.n_gpu_layers = C.int32_t(p.GPULayers)
	if p.GPULayers < 0 {
		mp.n_gpu_layers = 999
	}
	mp.use_mmap = C.bool(!p.NoMmap)
	mp.vocab_only = C.bool(p.VocabOnly)
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	m := C.llama_model_load_from_file(cpath, mp)
	if m == nil {
		return nil, nativeError("load " + path)
	}
	return &Model{c: m, vocab: C.llama_model_get_vocab(m), Info: info}, nil
}

// Close frees the model. It is safe to call twice.
func (m *Model) Close() {
	if m != nil && m.c != nil {
		C.llama_model_free(m.c)
		m.c = nil
	}
}

// Arch is the model's architecture name (llama, qwen2, ...).
func (m *Model) Arch() string { return m.Info.Arch() }

// Params is the number of parameters.
func (m *Model) Params() uint64 { return uint64(C.llama_model_n_params(m.c)) }

// Size is the total size of the model's tensors in bytes.
func (m *Model) Size() uint64 { return uint64(C.llama_model_size(m.c)) }

// VocabSize is the number of tokens in the vocabulary.
func (m *Model) VocabSize() int { return int(C.llama_vocab_n_tokens(m.vocab)) }

// TrainContext is the context length the model was trained with.
func (m *Model) TrainContext() int { return int(C.llama_model_n_ctx_train(m.c)) }

// Embd is the hidden size; Layers the number of blocks.
func (m *Model) Embd() int   { return int(C.llama_model_n_embd(m.c)) }
func (m *Model) Layers() int { return int(C.llama_model_n_layer(m.c)) }

// Desc is llama.cpp's one-line description ("qwen2 1.5B Q8_0").
func (m *Model) Desc() string {
	buf := make([]byte, 256)
	n := C.llama_model_desc(m.c, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	if n < 0 {
		return ""
	}
	return string(buf[:min(int(n), len(buf)-1)])
}

// Meta returns a metadata value as llama.cpp renders it, and whether it exists.
func (m *Model) Meta(key string) (string, bool) {
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	n := C.llama_model_meta_val_str(m.c, ckey, nil, 0)
	if n < 0 {
		return "", false
	}
	buf := make([]byte, int(n)+1)
	C.llama_model_meta_val_str(m.c, ckey, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	return string(buf[:n]), true
}

// ChatTemplate is the model's Jinja chat template ("" if it has none).
func (m *Model) ChatTemplate() string {
	t := C.llama_model_chat_template(m.c, nil)
	if t == nil {
		return ""
	}
	return C.GoString(t)
}

// Special tokens; -1 when the model has none.
func (m *Model) BOS() Token { return Token(C.llama_vocab_bos(m.vocab)) }
func (m *Model) EOS() Token { return Token(C.llama_vocab_eos(m.vocab)) }
func (m *Model) EOT() Token { return Token(C.llama_vocab_eot(m.vocab)) }
func (m *Model) PAD() Token { return Token(C.llama_vocab_pad(m.vocab)) }

// AddBOS reports whether tokenizing with addSpecial prepends BOS.
func (m *Model) AddBOS() bool { return bool(C.llama_vocab_get_add_bos(m.vocab)) }

// IsEOG reports whether t ends generation (EOS, EOT, ...).
func (m *Model) IsEOG(t Token) bool { return bool(C.llama_vocab_is_eog(m.vocab, C.llama_token(t))) }

// TokenText is the vocabulary entry of t as stored (not detokenized).
func (m *Model) TokenText(t Token) string {
	if t < 0 || int(t) >= m.VocabSize() {
		return ""
	}
	return C.GoString(C.llama_vocab_get_text(m.vocab, C.llama_token(t)))
}

// Tokenize turns text into tokens. addSpecial adds BOS/EOS as the model is configured to;
// parseSpecial lets special-token text (<|im_start|>) become special tokens.
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]Token, error) {
	if len(text) > 1<<30 {
		return nil, errors.New("text too long to tokenize")
	}
	ctext := C.CString(text)
	defer C.free(unsafe.Pointer(ctext))
	out := make([]Token, len(text)+8)
	for {
		n := C.llama_tokenize(m.vocab, ctext, C.int32_t(len(text)), (*C.llama_token)(unsafe.Pointer(&out[0])),
			C.int32_t(len(out)), C.bool(addSpecial), C.bool(parseSpecial))
		if n == C.INT32_MIN {
			return nil, errors.New("tokenization overflow")
		}
		if n >= 0 {
			return out[:n], nil
		}
		out = make([]Token, -n)
	}
}

// Piece is the text of one token as it appears in generated output (bytes, possibly
// part of a UTF-8 character). special renders control tokens as their text.
func (m *Model) Piece(t Token, special bool) []byte {
	var buf [128]byte
	n := C.llama_token_to_piece(m.vocab, C.llama_token(t), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), 0, C.bool(special))
	if n >= 0 {
		return append([]byte(nil), buf[:n]...)
	}
	big := make([]byte, -n)
	n = C.llama_token_to_piece(m.vocab, C.llama_token(t), (*C.char)(unsafe.Pointer(&big[0])), C.int32_t(len(big)), 0, C.bool(special))
	if n < 0 {
		return nil
	}
	return big[:n]
}

// Detokenize turns tokens back into text.
func (m *Model) Detokenize(tokens []Token, removeSpecial, unparseSpecial bool) string {
	if len(tokens) == 0 {
		return ""
	}
	buf := make([]byte, len(tokens)*8+16)
	for {
		n := C.llama_detokenize(m.vocab, (*C.llama_token)(unsafe.Pointer(&tokens[0])), C.int32_t(len(tokens)),
			(*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), C.bool(removeSpecial), C.bool(unparseSpecial))
		if n >= 0 {
			return string(buf[:n])
		}
		buf = make([]byte, -n)
	}
}

// Message is one turn of a chat.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ApplyChatTemplate renders messages with the model's template (or tmpl when not empty,
// a Jinja template or a llama.cpp built-in template name). llama.cpp recognises
// common templates by their text; others get an error.
func (m *Model) ApplyChatTemplate(tmpl string, msgs []Message, addAssistant bool) (string, error) {
	if tmpl == "" {
		tmpl = m.ChatTemplate()
	}
	if tmpl == "" {
		return "", errors.New("the model has no chat template")
	}
	ctmpl := C.CString(tmpl)
	defer C.free(unsafe.Pointer(ctmpl))
	cmsgs := make([]C.struct_llama_chat_message, len(msgs))
	total := 0
	for i, msg := range msgs {
		cmsgs[i].role = C.CString(msg.Role)
		cmsgs[i].content = C.CString(msg.Content)
		total += len(msg.Role) + len(msg.Content)
	}
	defer func() {
		for i := range cmsgs {
			C.free(unsafe.Pointer(cmsgs[i].role))
			C.free(unsafe.Pointer(cmsgs[i].content))
		}
	}()
	var first *C.struct_llama_chat_message
	if len(cmsgs) > 0 {
		first = &cmsgs[0]
	}
	buf := make([]byte, 2*total+256)
	for {
		n := C.llama_chat_apply_template(ctmpl, first, C.size_t(len(cmsgs)), C.bool(addAssistant),
			(*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)))
		if n < 0 {
			return "", errors.New("chat template not supported by llama.cpp: " + firstLine(tmpl))
		}
		if int(n) <= len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, n)
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 60 {
		s = s[:60] + "..."
	}
	return s
}
