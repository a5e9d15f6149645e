module github.com/magicconch/conch

go 1.26.8

require (
	github.com/ollama/ollama v0.17.4
	github.com/spf13/cobra v1.10.2
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.10 // indirect
	golang.org/x/sync v0.17.0 // indirect
)
