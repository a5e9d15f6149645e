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

// SetLogLevel sets the threshold for llama.cpp's own log lines on stderr:
// 0 debug, 1 info, 2 warn, 3 error (default), 4 silent.
func SetLogLevel(level int) {
	ensureInit()
	C.conch_set_log_level(C.int(level))
}
