package train

// epochOrder is the order of the training samples in an epoch: a Fisher-Yates shuffle
// driven by splitmix64 seeded from (seed, epoch). It is written out rather than taken
// from math/rand so that it can never change under a resumed run.
func epochOrder(seed uint64, epoch, n int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	x := seed ^ (uint64(epoch)+1)*0x9e3779b97f4a7c15
	next := func() uint64 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		return z ^ (z >> 31)
	}
	for i := n - 1; i > 0; i-- {
		j := int(next() % uint64(i+1))
		order[i], order[j] = order[j], order[i]
	}
	return order
}
