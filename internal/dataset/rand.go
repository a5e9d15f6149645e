package dataset

// Rand is a small deterministic generator (splitmix64). Data order must not change with
// the Go version or platform, which math/rand does not promise; its whole state is one
// number, so a checkpoint can save and restore it.
type Rand struct{ State uint64 }

// NewRand seeds a generator.
func NewRand(seed uint64) *Rand { return &Rand{State: seed} }

// Uint64 returns the next value.
func (r *Rand) Uint64() uint64 {
	r.State += 0x9e3779b97f4a7c15
	z := r.State
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// Intn returns a uniform value in [0, n) without modulo bias; n must be positive.
func (r *Rand) Intn(n int) int {
	bound := uint64(n)
	threshold := -bound % bound // values below it would favour small results
	for {
		if x := r.Uint64(); x >= threshold {
			return int(x % bound)
		}
	}
}

// Shuffle permutes n items with Fisher-Yates through swap.
func (r *Rand) Shuffle(n int, swap func(i, j int)) {
	for i := n - 1; i > 0; i-- {
		swap(i, r.Intn(i+1))
	}
}
