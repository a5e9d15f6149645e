//go:build cuda

package llama

// #cgo CFLAGS: -I${SRCDIR}/../build/include
// #cgo LDFLAGS: -L${SRCDIR}/../build/lib -lconch -lllama -lggml -lggml-cuda -lggml-cpu -lggml-base
// #cgo LDFLAGS: -L/usr/local/cuda/lib64 -L/usr/local/cuda/lib64/stubs -lcudart_static -lcublas_static -lcublasLt_static -lculibos -lcuda -lrt
// #cgo LDFLAGS: -lstdc++ -lm -fopenmp -lpthread -ldl
import "C"
