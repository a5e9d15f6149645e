package dataset

import "testing"

// BenchmarkEncodeGlaive encodes LLaMA-Factory's tool-calling demo (300 long multi-turn
// conversations with tool definitions) with the Qwen2 tokenizer.
func BenchmarkEncodeGlaive(b *testing.B) {
	m := vocabModel(b, "qwen")
	convs, err := Load(lfDir(b), []string{"glaive_toolcall_en_demo"})
	if err != nil {
		b.Fatal(err)
	}
	qwen := mustTemplate(b, "qwen")
	b.ResetTimer()
	for range b.N {
		if _, _, err := Encode(m, qwen, convs, Options{CutoffLen: 2048}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(convs))*float64(b.N)/b.Elapsed().Seconds(), "conversations/s")
}
