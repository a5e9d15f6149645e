package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/magicconch/conch/llama"
)

// identity holds the settings a resumed run may not change: they decide which samples
// each step sees, or the shape of what the checkpoint holds.
type identity struct {
	Fingerprint string  `json:"data_fingerprint"` // samples, labels and split, after templating
	BatchSize   int     `json:"per_device_train_batch_size"`
	GradAccum   int     `json:"gradient_accumulation_steps"`
	LoraRank    int     `json:"lora_rank"`
	LoraAlpha   float64 `json:"lora_alpha"`
	LoraTarget  string  `json:"lora_target"`
	UseRSLoRA   bool    `json:"use_rslora,omitempty"`
	Seed        uint64  `json:"seed"`
	ModelArch   string  `json:"model_arch"`
	ModelSize   int64   `json:"model_size"`
}

// loopState is everything the loop needs to continue exactly where a checkpoint was
// written. The data order needs no RNG state of its own: each epoch's order is a
// permutation drawn from a generator seeded with (DataSeed, Epoch), so (Epoch, Pos)
// is the whole cursor.
type loopState struct {
	Version    int        `json:"version"`
	Step       int        `json:"step"` // optimizer steps done
	TotalSteps int        `json:"total_steps"`
	Epoch      int        `json:"epoch"`    // the epoch in progress, from 0
	Pos        int        `json:"position"` // samples of this epoch's order already used
	DataSeed   uint64     `json:"data_seed"`
	Tokens     int64      `json:"tokens"`  // sequence tokens trained on
	Elapsed    float64    `json:"elapsed"` // seconds
	Pending    pending    `json:"pending"`
	Log        []LogEntry `json:"log"`
	Identity   identity   `json:"identity"`
}

// checkpoint is a complete checkpoint folder found on disk.
type checkpoint struct {
	Step int
	Dir  string
}

// saveCheckpoint writes checkpoints/step-N atomically: everything goes into step-N.tmp,
// which is renamed only once complete, so a crash mid-write never leaves a checkpoint
// that looks usable. Then it prunes to the newest keep (0: keep all).
func saveCheckpoint(out string, st *loopState, tr *llama.Trainer, meta map[string]string, keep int) (string, error) {
	root := filepath.Join(out, checkpointsDir)
	dir := filepath.Join(root, fmt.Sprintf("step-%d", st.Step))
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("checkpoint at step %d: %w", st.Step, err)
	}
	if err := tr.SaveAdapter(filepath.Join(tmp, adapterFile), meta); err != nil {
		return fail(err)
	}
	if err := tr.SaveState(filepath.Join(tmp, stateFile)); err != nil {
		return fail(err)
	}
	b, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return fail(err)
	}
	if err := writeFileAtomic(filepath.Join(tmp, loopFile), b); err != nil {
		return fail(err)
	}
	// A checkpoint of the same step from an interrupted earlier attempt is replaced.
	if err := os.RemoveAll(dir); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fail(err)
	}
	syncDir(root)
	if keep > 0 {
		all, _ := listCheckpoints(out)
		for i := 0; i < len(all)-keep; i++ {
			os.RemoveAll(all[i].Dir)
		}
	}
	return dir, nil
}

// syncDir makes a rename durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// listCheckpoints returns the complete checkpoints, oldest first.
func listCheckpoints(out string) ([]checkpoint, error) {
	root := filepath.Join(out, checkpointsDir)
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cps []checkpoint
	for _, e := range ents {
		n, ok := strings.CutPrefix(e.Name(), "step-")
		if !ok || !e.IsDir() {
			continue
		}
		step, err := strconv.Atoi(n) // step-N.tmp fails here: incomplete
		if err != nil {
			continue
		}
		dir := filepath.Join(root, e.Name())
		if _, err := os.Stat(filepath.Join(dir, loopFile)); err != nil {
			continue
		}
		cps = append(cps, checkpoint{Step: step, Dir: dir})
	}
	sort.Slice(cps, func(i, j int) bool { return cps[i].Step < cps[j].Step })
	return cps, nil
}

// removeIncomplete deletes step-N.tmp folders left by a crash during a save.
func removeIncomplete(out string) {
	matches, _ := filepath.Glob(filepath.Join(out, checkpointsDir, "step-*.tmp"))
	for _, m := range matches {
		os.RemoveAll(m)
	}
}

// readLoopState reads a checkpoint's loop.json.
func readLoopState(dir string) (*loopState, error) {
	b, err := os.ReadFile(filepath.Join(dir, loopFile))
	if err != nil {
		return nil, err
	}
	st := &loopState{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, loopFile), err)
	}
	if st.Version != loopVersion {
		return nil, fmt.Errorf("%s: checkpoint format %d, this conch reads %d", dir, st.Version, loopVersion)
	}
	return st, nil
}

// checkIdentity explains the first setting that differs between a checkpoint and now.
func checkIdentity(saved, now identity) error {
	diff := func(name string, a, b any) error {
		return fmt.Errorf("cannot resume: %s was %v in the checkpoint and is %v now (start a new run in another --output, or use --overwrite-output-dir)", name, a, b)
	}
	switch {
	case saved.ModelArch != now.ModelArch || saved.ModelSize != now.ModelSize:
		return diff("the base model", fmt.Sprintf("%s, %d bytes", saved.ModelArch, saved.ModelSize), fmt.Sprintf("%s, %d bytes", now.ModelArch, now.ModelSize))
	case saved.LoraRank != now.LoraRank:
		return diff("lora_rank", saved.LoraRank, now.LoraRank)
	case saved.LoraAlpha != now.LoraAlpha:
		return diff("lora_alpha", saved.LoraAlpha, now.LoraAlpha)
	case saved.UseRSLoRA != now.UseRSLoRA:
		return diff("use_rslora", saved.UseRSLoRA, now.UseRSLoRA)
	case saved.LoraTarget != now.LoraTarget:
		return diff("lora_target", saved.LoraTarget, now.LoraTarget)
	case saved.BatchSize != now.BatchSize:
		return diff("per_device_train_batch_size", saved.BatchSize, now.BatchSize)
	case saved.GradAccum != now.GradAccum:
		return diff("gradient_accumulation_steps", saved.GradAccum, now.GradAccum)
	case saved.Seed != now.Seed:
		return diff("seed", saved.Seed, now.Seed)
	case saved.Fingerprint != now.Fingerprint:
		return errors.New("cannot resume: the training data differs from the checkpoint's (dataset, template, cutoff_len, max_samples, val_size or train_on_prompt changed)")
	}
	return nil
}
