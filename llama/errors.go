package llama

// #include <stdlib.h>
// #include "conch.h"
import "C"

import (
	"errors"
	"fmt"
	"sync"
)

var initOnce sync.Once

// ensureInit initialises the native backends once per process.
func ensureInit() { initOnce.Do(func() { C.conch_init() }) }

// nativeError wraps the last message logged by llama.cpp on this thread, if any.
// Callers must call it from the same goroutine, locked to its OS thread, that made the call.
func nativeError(what string) error {
	msg := C.GoString(C.conch_last_error())
	C.conch_clear_error()
	if msg == "" {
		return errors.New(what)
	}
	return fmt.Errorf("%s: %s", what, msg)
}

// GPUCount reports how many GPU devices the compiled-in backends see (0 on a CPU build).
func GPUCount() int {
	ensureInit()
	return int(C.conch_gpu_count())
}

// GPU is one GPU device as the compiled-in backend sees it.
type GPU struct {
	Name        string
	Free, Total uint64 // bytes of device memory free now, and in all
}

// GPUs lists the GPU devices (none on a CPU build), with their memory as of this call.
func GPUs() []GPU {
	ensureInit()
	var out []GPU
	for i := 0; ; i++ {
		var name *C.char
		var free, total C.uint64_t
		if C.conch_gpu_info(C.int(i), &name, &free, &total) != 0 {
			return out
		}
		out = append(out, GPU{C.GoString(name), uint64(free), uint64(total)})
	}
}

// SetLogLevel sets the threshold for llama.cpp's own log lines on stderr:
// 0 debug, 1 info, 2 warn, 3 error (default), 4 silent.
func SetLogLevel(level int) {
	ensureInit()
	C.conch_set_log_level(C.int(level))
}
