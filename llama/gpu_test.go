package llama

import (
	"math"
	"strings"
	"testing"

	"github.com/magicconch/conch/internal/testmodel"
)

// GPU checks. They run on a CUDA build (`make cuda`, -tags cuda) on a machine with a
// GPU and skip elsewhere; the trainer's proofs in train_test.go also run on the GPU
// there (trDevices). The CPU results are the reference.

func needGPU(t *testing.T) {
	t.Helper()
	if GPUCount() == 0 {
		t.Skip("no GPU: build with make cuda on a machine with one")
	}
}

func TestGPUList(t *testing.T) {
	gpus := GPUs()
	if len(gpus) != GPUCount() {
		t.Fatalf("GPUs() lists %d devices, GPUCount() says %d", len(gpus), GPUCount())
	}
	for _, g := range gpus {
		t.Logf("%s: %.1f of %.1f GiB free", g.Name, float64(g.Free)/(1<<30), float64(g.Total)/(1<<30))
		if g.Name == "" || g.Total == 0 || g.Free > g.Total {
			t.Errorf("implausible GPU %+v", g)
		}
	}
}

// A model big enough (about 40 MB of F32 weights) for its upload to show in the
// device's free memory.
var gpuSpec = testmodel.Spec{Name: "gpu-llama", Arch: "llama", NEmbd: 512, NLayer: 4, NHead: 8, NHeadKV: 4, NFF: 1024, Seed: 11}

// Offloaded inference gives the CPU's logits, and the weights really are on the GPU.
func TestGPUInferenceMatchesCPU(t *testing.T) {
	needGPU(t)
	for _, name := range []string{"stories", "qwen2", "qwen3", "big"} {
		t.Run(name, func(t *testing.T) {
			path := ""
			if name == "big" {
				path = testmodel.Cached(t, gpuSpec)
			} else {
				path = trModel(t, name)
			}
			cpu := trLoad(t, path)
			before := GPUs()[0].Free
			gpu, err := LoadModel(path, ModelParams{GPULayers: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer gpu.Close()
			if name == "big" {
				after := GPUs()[0].Free
				t.Logf("device memory taken by the model: %.1f MiB", float64(int64(before)-int64(after))/(1<<20))
				if before < after || before-after < 30<<20 {
					t.Fatalf("loading with GPULayers -1 took %d bytes of device memory: not offloaded", int64(before)-int64(after))
				}
			}
			tokens := trTokens(24, cpu.VocabSize(), 9)
			want := llamaAllLogits(t, cpu, tokens, nil)
			got := llamaAllLogits(t, gpu, tokens, nil)
			e := relErr(got, want)
			t.Logf("GPU logits: relative error %.3g", e)
			if e > 1e-3 || math.IsNaN(e) {
				t.Fatalf("GPU logits differ from the CPU's by %.3g", e)
			}
		})
	}
}

// The GPU trainer computes the CPU trainer's loss and gradients for every compute type,
// and its AdamW steps land on the same parameters.
func TestGPUTrainerMatchesCPU(t *testing.T) {
	needGPU(t)
	limits := map[string]float64{"f32": 1e-4, "f16": 1e-2, "bf16": 5e-2, "q8_0": 1e-1}
	for _, arch := range []string{"llama", "qwen2"} {
		for _, ct := range []string{"f32", "f16", "bf16", "q8_0"} {
			t.Run(arch+"-"+ct, func(t *testing.T) {
				m := trLoad(t, testmodel.Cached(t, trSpecs32[arch]))
				p := TrainParams{Rank: 4, MaxSeqLen: 16, Seed: 1, Threads: 1, ComputeType: ct}
				if arch == "llama" {
					p.Targets = trAllWithHead
				}
				cpu := trNew(t, m, p)
				p.GPULayers = -1
				gpu := trNew(t, m, p)
				trRandomize(t, cpu, 12, 0.1)
				for _, n := range cpu.Params() {
					if err := gpu.Set(n, cpu.Get(n)); err != nil {
						t.Fatal(err)
					}
				}
				tokens := trTokens(16, m.VocabSize(), 4)
				labels := trLabels(tokens, 0, 1, 2)
				for step := 0; step < 3; step++ {
					cl, cg := trGrads(t, cpu, tokens, labels)
					gl, gg := trGrads(t, gpu, tokens, labels)
					le, ge := math.Abs(gl-cl)/cl, relL2(gg, cg)
					t.Logf("step %d: loss %.3g, gradients %.3g relative to the CPU", step, le, ge)
					if le > limits[ct] || ge > limits[ct] || math.IsNaN(le+ge) {
						t.Fatalf("step %d: GPU loss %v vs CPU %v (%.3g), gradients differ by %.3g", step, gl, cl, le, ge)
					}
					cn, err1 := cpu.Step(1e-2, 0.01, 1)
					gn, err2 := gpu.Step(1e-2, 0.01, 1)
					if err1 != nil || err2 != nil {
						t.Fatal(err1, err2)
					}
					if math.Abs(cn-gn) > limits[ct]*cn {
						t.Fatalf("step %d: gradient norm GPU %v, CPU %v", step, gn, cn)
					}
				}
				var cw, gw []float64
				for _, n := range cpu.Params() {
					cw = append(cw, f64s(cpu.Get(n))...)
					gw = append(gw, f64s(gpu.Get(n))...)
				}
				if e := relL2(gw, cw); e > limits[ct] || math.IsNaN(e) {
					t.Fatalf("after 3 steps the GPU's LoRA weights differ from the CPU's by %.3g", e)
				}
			})
		}
	}
}

// Nothing falls back to the CPU in silence: an operation the GPU backend cannot run
// (CUDA's RMS_NORM_BACK on tiny-qwen3's 16-wide q/k norms) stops training with an error
// that names it.
func TestGPUTrainerRefusesWhatItCannotRun(t *testing.T) {
	needGPU(t)
	m := trLoad(t, trModel(t, "qwen3"))
	tr, err := NewTrainer(m, TrainParams{Rank: 4, MaxSeqLen: 16, GPULayers: -1})
	if err == nil {
		defer tr.Close()
		tokens := trTokens(12, m.VocabSize(), 1)
		_, _, err = tr.Accumulate(tokens, trLabels(tokens))
	}
	if err == nil || !strings.Contains(err.Error(), "cannot run") {
		t.Fatalf("error %v, want one naming the operation the GPU cannot run", err)
	}
	t.Log(err)
}
