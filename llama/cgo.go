//go:build !cuda

package llama

// #cgo CFLAGS: -I${SRCDIR}/../build/include
// #cgo LDFLAGS: -L${SRCDIR}/../build/lib -lconch -lllama -lggml -lggml-cpu -lggml-base -lstdc++ -lm -lpthread -ldl
import "C"

// BuildTags are the go build tags this build of the library needs ("cuda" after make
// cuda): programs and tests that build a binary against build/lib pass them on.
const BuildTags = ""
