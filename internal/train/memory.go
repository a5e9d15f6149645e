package train

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"
)

// availableMemory reports the memory a new allocation can get without swapping. Tests
// replace it to exercise the refusal without a model too big for the machine.
var availableMemory = memAvailable

// memAvailable reads MemAvailable from /proc/meminfo (Linux).
func memAvailable() (uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // "12345678 kB"
		if len(fields) == 0 {
			break
		}
		kb, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, err
		}
		return kb * 1024, nil
	}
	return 0, errors.New("/proc/meminfo has no MemAvailable")
}
