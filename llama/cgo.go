//go:build !cuda

package llama

// #cgo CFLAGS: -I${SRCDIR}/../build/include
// #cgo LDFLAGS: -L${SRCDIR}/../build/lib -lconch -lllama -lggml -lggml-cpu -lggml-base -lstdc++ -lm -fopenmp -lpthread -ldl
import "C"

// CUDABuild reports whether this build has ggml's CUDA backend (make cuda, -tags cuda).
const CUDABuild = false
