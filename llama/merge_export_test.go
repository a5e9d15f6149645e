package llama

import "testing"

// LlamaCppQuantize converts in to typ with llama.cpp's own quantiser (llama_model_quantize),
// the reference our writer's bytes are compared with.
func LlamaCppQuantize(in, out, typ string) error {
	q, err := ParseQuantType(typ)
	if err != nil {
		return err
	}
	return quantizeFile(in, out, out, q, 2)
}

func TestFoldRanges(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want string
	}{{[]int{0}, "0"}, {[]int{4, 0, 1, 2, 3}, "0-4"}, {[]int{0, 2, 3, 7, 9, 10, 11}, "0,2-3,7,9-11"}} {
		if got := foldRanges(c.in); got != c.want {
			t.Errorf("foldRanges(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

// The fallback chain is llama.cpp's for the K types, then f16 for anything that still
// does not fit.
func TestFitType(t *testing.T) {
	for _, c := range []struct {
		typ  string
		n    int64
		want string
	}{
		{"q8_0", 64, "q8_0"}, {"q8_0", 172, "f16"}, {"q4_0", 172, "f16"}, {"iq4_nl", 48, "f16"},
		{"q6_K", 64, "q8_0"}, {"q5_K", 96, "q5_1"}, {"q4_K", 32, "q5_0"}, {"q3_K", 160, "iq4_nl"},
		{"iq4_xs", 172, "f16"}, {"q4_K", 512, "q4_K"}, {"f32", 7, "f32"},
	} {
		var typ uint32
		for i := uint32(0); i < 40; i++ {
			if TypeName(i) == c.typ {
				typ = i
			}
		}
		if got := TypeName(fitType(typ, c.n)); got != c.want {
			t.Errorf("%s with rows of %d: %s, want %s", c.typ, c.n, got, c.want)
		}
	}
}

// SetWriterSlice makes the writer convert n values at a time (0: its default) until the
// returned function restores it.
func SetWriterSlice(n int64) func() {
	old := writerSlice
	writerSlice = n
	return func() { writerSlice = old }
}
