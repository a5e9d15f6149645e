//go:build cuda

package llama

// The CUDA runtime, cuBLAS and the driver library are linked as shared libraries
// through build/cuda, which CMake fills with links into the toolkit it found.
// scripts/go adds the rpath (build/cgo-ldflags).

// #cgo CFLAGS: -I${SRCDIR}/../build/include
// #cgo LDFLAGS: -L${SRCDIR}/../build/lib -lconch -lllama -lggml -lggml-cuda -lggml-cpu -lggml-base
// #cgo LDFLAGS: -L${SRCDIR}/../build/cuda -Wl,--no-as-needed -lcudart -lcublas -lcublasLt -lcuda
// #cgo LDFLAGS: -lstdc++ -lm -lpthread -ldl -lrt
import "C"

// BuildTags are the go build tags this build of the library needs ("cuda" after make
// cuda): programs and tests that build a binary against build/lib pass them on.
const BuildTags = "cuda"
