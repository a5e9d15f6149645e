// Package thirdparty pins github.com/ollama/ollama in go.mod: the native build takes
// llama.cpp and ggml from that module's source (see the Makefile and CMakeLists.txt),
// and its pure-Go GGUF and conversion packages are used by the library.
package thirdparty

import _ "github.com/ollama/ollama/fs/ggml"
