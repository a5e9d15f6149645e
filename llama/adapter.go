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

// Adapter is a LoRA adapter loaded for a model (llama.cpp's LoRA GGUF).
type Adapter struct {
	c     *C.struct_llama_adapter_lora
	model *Model
	Info  *GGUF
}

// LoadAdapter validates path as a LoRA adapter for m and loads it.
func LoadAdapter(m *Model, path string) (*Adapter, error) {
	info, err := Inspect(path)
	if err != nil {
		return nil, err
	}
	if err := CheckAdapter(m.Info, info); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.conch_clear_error()
	a := C.llama_adapter_lora_init(m.c, cpath)
	if a == nil {
		return nil, nativeError("load adapter " + path)
	}
	return &Adapter{c: a, model: m, Info: info}, nil
}

// CheckAdapter says why adapter cannot apply to base, or nil: it must be a LoRA adapter
// for the same architecture whose every tensor names a base weight of matching shape.
func CheckAdapter(base, adapter *GGUF) error {
	if !adapter.IsAdapter() {
		return errors.New("not a LoRA adapter (general.type is not \"adapter\")")
	}
	if t := adapter.String("adapter.type"); t != "lora" {
		return fmt.Errorf("adapter type %q is not supported (want lora)", t)
	}
	if adapter.Arch() != base.Arch() {
		return fmt.Errorf("adapter is for architecture %q, the model is %q", adapter.Arch(), base.Arch())
	}
	for _, t := range adapter.Tensors {
		name, isA := cutSuffix(t.Name, ".lora_a")
		if !isA {
			var isB bool
			if name, isB = cutSuffix(t.Name, ".lora_b"); !isB {
				return fmt.Errorf("unexpected adapter tensor %q", t.Name)
			}
		}
		w, ok := base.Tensor(name)
		if !ok {
			return fmt.Errorf("adapter tensor %q has no base weight %q: made for another model?", t.Name, name)
		}
		if len(t.Shape) != 2 || len(w.Shape) < 2 {
			return fmt.Errorf("adapter tensor %q is not a matrix", t.Name)
		}
		// llama.cpp stores token_embd's pair the other way round: a [r, n_vocab], b [n_embd, r]
		embd := strings.HasSuffix(name, "token_embd.weight")
		var ok2 bool
		switch {
		case embd && isA:
			ok2 = t.Shape[1] == w.Shape[1]
		case embd:
			ok2 = t.Shape[1] == w.Shape[0]
		case isA:
			ok2 = t.Shape[0] == w.Shape[0]
		default:
			ok2 = t.Shape[1] == w.Shape[1]
		}
		if !ok2 {
			return fmt.Errorf("adapter tensor %q has shape %v, base weight %q has %v: made for another model", t.Name, t.Shape, name, w.Shape)
		}
	}
	return nil
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}

// Close frees the adapter; remove it from every context first.
func (a *Adapter) Close() {
	if a != nil && a.c != nil {
		C.llama_adapter_lora_free(a.c)
		a.c = nil
	}
}

// Meta returns an adapter metadata value as llama.cpp renders it.
func (a *Adapter) Meta(key string) (string, bool) {
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	buf := make([]byte, 1024)
	n := C.llama_adapter_meta_val_str(a.c, ckey, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	if n < 0 {
		return "", false
	}
	return string(buf[:min(int(n), len(buf)-1)]), true
}

// SetAdapter applies a to the context with a scale (1 = as trained).
func (c *Context) SetAdapter(a *Adapter, scale float32) error {
	if a.model != c.model {
		return errors.New("adapter was loaded for another model")
	}
	if C.conch_adapter_set(c.c, a.c, C.float(scale)) != 0 {
		return errors.New("could not apply adapter")
	}
	return nil
}

// RemoveAdapter removes a from the context.
func (c *Context) RemoveAdapter(a *Adapter) { C.conch_adapter_rm(c.c, a.c) }

// ClearAdapters removes every adapter from the context.
func (c *Context) ClearAdapters() { C.conch_adapter_clear(c.c) }
