// Command conchd serves a model over HTTP.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "conchd: not yet")
	os.Exit(1)
}
