package train

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/magicconch/conch/internal/dataset"
	"github.com/magicconch/conch/llama"
)

// job is a validated run: everything is checked and the data is encoded before a single
// weight is loaded, so a mistake costs seconds, not a crash minutes into training.
type job struct {
	cfg        Config
	vocab      *llama.Model // the tokenizer only; Run closes it
	info       *llama.GGUF
	tmpl       *dataset.Template
	train, val []dataset.Sample
	stats      dataset.Stats
	params     llama.TrainParams
	estimate   uint64
	ident      identity
}

// memoryRoom is the memory training may take where it runs: what the system has
// available, or the GPU's free memory. known is false when that cannot be read.
func memoryRoom(gpuLayers int) (room uint64, where string, known bool) {
	if gpuLayers != 0 {
		if gpus := llama.GPUs(); len(gpus) > 0 {
			return gpus[0].Free, gpus[0].Name, true
		}
		return 0, "", false
	}
	avail, err := availableMemory()
	return avail, "this machine", err == nil
}

// device names where training runs, for the log.
func (j *job) device() string {
	if j.params.GPULayers != 0 {
		if gpus := llama.GPUs(); len(gpus) > 0 {
			return "the GPU (" + gpus[0].Name + ")"
		}
	}
	threads := j.params.Threads
	if threads <= 0 {
		threads = llama.DefaultThreads()
	}
	return fmt.Sprintf("the CPU (%d threads)", threads)
}

// prepare validates the config, the model file, the template and the datasets, encodes
// the samples with the model's tokenizer and checks that training fits in memory.
func prepare(cfg Config, pr *progress) (*job, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	j := &job{cfg: cfg}
	info, err := llama.Inspect(cfg.Model)
	if err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	if info.IsAdapter() {
		return nil, fmt.Errorf("%s is a LoRA adapter; --model needs the base model it was made for", cfg.Model)
	}
	arch := info.Arch()
	if !llama.TrainableArch(arch) {
		return nil, fmt.Errorf("%s: architecture %q cannot be fine-tuned by conch yet (supported: llama, qwen2, qwen3)", cfg.Model, arch)
	}
	j.info = info

	if strings.EqualFold(cfg.Template, "auto") {
		j.tmpl, err = dataset.TemplateForModel(info.String("tokenizer.chat_template"), arch)
	} else {
		j.tmpl, err = dataset.TemplateByName(cfg.Template)
	}
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}

	convs, err := dataset.Load(cfg.DatasetDir, cfg.DatasetNames())
	if err != nil {
		return nil, err
	}

	// The tokenizer alone: the weights are not needed to encode the data, and the
	// trainer reads them from the file itself.
	vocab, err := llama.LoadModel(cfg.Model, llama.ModelParams{VocabOnly: true})
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			vocab.Close()
		}
	}()
	j.vocab = vocab
	if err := checkTemplateTokens(vocab, j.tmpl); err != nil {
		return nil, err
	}
	j.train, j.val, j.stats, err = dataset.EncodeWithStats(vocab, j.tmpl, convs, dataset.Options{
		CutoffLen: cfg.CutoffLen, TrainOnPrompt: cfg.TrainOnPrompt, MaxSamples: cfg.MaxSamples,
		ValSize: cfg.ValSize, Seed: cfg.Seed,
	})
	if err != nil {
		return nil, err
	}
	if len(j.train) == 0 {
		return nil, errors.New("no training samples left after the validation split (lower val_size)")
	}
	longest := 0
	for _, s := range append(j.train[:len(j.train):len(j.train)], j.val...) {
		longest = max(longest, len(s.Tokens))
	}
	if ctxTrain, has := info.Uint(arch + ".context_length"); has && ctxTrain > 0 && uint64(longest) > ctxTrain {
		pr.line("note: samples up to %d tokens are longer than the model's training context (%d)", longest, ctxTrain)
	}

	targets, _ := cfg.Targets()
	gpuLayers := cfg.GPULayers
	if llama.GPUCount() == 0 {
		if gpuLayers > 0 {
			return nil, fmt.Errorf("gpu_layers %d asks for the GPU, but this build sees none (build with make cuda on a machine with an NVIDIA GPU, or use gpu_layers 0)", gpuLayers)
		}
		gpuLayers = 0 // -1 means "the GPU if there is one"
	}
	ckOn, ckAuto, _ := cfg.Checkpointing()
	j.params = llama.TrainParams{
		Rank: cfg.LoraRank, Alpha: float32(cfg.AdapterAlpha()), Targets: targets, MaxSeqLen: longest,
		LRRatioB: float32(cfg.LoraPlusRatio), NEFTuneAlpha: float32(cfg.NEFTuneAlpha),
		ComputeType: cfg.ComputeType, Threads: cfg.Threads, GPULayers: gpuLayers, Seed: cfg.Seed,
		Beta1: float32(cfg.AdamBeta1), Beta2: float32(cfg.AdamBeta2), Eps: float32(cfg.AdamEpsilon),
		Checkpoint: ckOn,
	}
	j.estimate = llama.EstimateTrainMemory(info, j.params)
	if j.estimate == 0 {
		// The trainer refuses these settings; NewTrainer says why, before it reads a weight.
		tr, terr := llama.NewTrainer(vocab, j.params)
		if terr == nil {
			tr.Close()
			terr = errors.New("the trainer cannot plan its memory for these settings")
		}
		return nil, terr
	}
	room, where, known := memoryRoom(gpuLayers)
	if known && j.estimate > room && ckAuto {
		// Recomputing layers is slower, so auto turns it on only when it is needed.
		p := j.params
		p.Checkpoint = true
		if est := llama.EstimateTrainMemory(info, p); est > 0 {
			if est <= room {
				pr.line("gradient checkpointing on: training would need about %s, more than the %s %s has, and %s with it",
					fmtBytes(j.estimate), fmtBytes(room), where, fmtBytes(est))
			}
			j.params, j.estimate = p, est // if it does not fit either, the error gives the smaller figure
		}
	}
	if known && j.estimate > room {
		hint := "use a smaller model, a lower cutoff_len or lora_rank, or free memory"
		if gpuLayers != 0 {
			hint = "use a lower cutoff_len or lora_rank, compute_type q8_0, or --gpu-layers 0 to train on the CPU"
		}
		if !j.params.Checkpoint && !ckAuto {
			hint = "turn gradient_checkpointing on, " + hint
		}
		ck := ""
		if j.params.Checkpoint {
			ck = ", gradient checkpointing"
		}
		free := "available"
		if gpuLayers != 0 {
			free = "free"
		}
		return nil, fmt.Errorf("training needs about %s of memory (lora_rank %d, longest sample %d tokens, compute_type %s%s) but %s has only %s %s: %s",
			fmtBytes(j.estimate), cfg.LoraRank, longest, cfg.ComputeType, ck, where, fmtBytes(room), free, hint)
	}

	fi, err := os.Stat(cfg.Model)
	if err != nil {
		return nil, err
	}
	j.ident = identity{
		Fingerprint: fingerprint(j.train, j.val), BatchSize: cfg.BatchSize, GradAccum: cfg.GradAccum,
		LoraRank: cfg.LoraRank, LoraAlpha: cfg.Alpha(), LoraTarget: strings.Join(targets, ","), Seed: cfg.Seed,
		UseRSLoRA: cfg.UseRSLoRA,
		ModelArch: arch, ModelSize: fi.Size(),
	}
	ok = true
	return j, nil
}

// checkTemplateTokens refuses a template whose control tokens the model's vocabulary
// does not have (llama3's <|eot_id|> on a Qwen model): they would be learned as plain
// text made of many pieces and the model would never stop.
func checkTemplateTokens(m *llama.Model, t *dataset.Template) error {
	for _, s := range t.Stop {
		ids, err := m.Tokenize(s, false, true)
		if err != nil {
			return err
		}
		if len(ids) != 1 {
			return fmt.Errorf("template %s needs the control token %s, which this model's vocabulary lacks: use --template auto or a template of the model's family", t.Name, s)
		}
	}
	return nil
}

// fingerprint identifies the encoded data, so a resume notices any change to it.
func fingerprint(train, val []dataset.Sample) string {
	h := sha256.New()
	var b [8]byte
	for _, set := range [][]dataset.Sample{train, val} {
		binary.LittleEndian.PutUint64(b[:], uint64(len(set)))
		h.Write(b[:])
		for _, s := range set {
			binary.LittleEndian.PutUint64(b[:], uint64(len(s.Tokens)))
			h.Write(b[:])
			binary.Write(h, binary.LittleEndian, s.Tokens)
			binary.Write(h, binary.LittleEndian, s.Labels)
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
