package llama

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// pendingFile is an output written under a hidden temporary name beside its final path
// (same file system, so the final move is a rename) and moved into place only when it is
// complete and verified. Until then a failure or cancellation leaves nothing behind.
type pendingFile struct {
	final, tmp, dir string
	force           bool
	done            bool
}

// newPendingFile reserves a temporary name for final. Without force an existing final
// path is an error now, and again at commit time (another writer may have won meanwhile).
func newPendingFile(final string, force bool) (*pendingFile, error) {
	if final == "" {
		return nil, errors.New("no output path")
	}
	if st, err := os.Stat(final); err == nil {
		if st.IsDir() {
			return nil, fmt.Errorf("%s is a directory: give a file name", final)
		}
		if !force {
			return nil, fmt.Errorf("%s already exists (use --force to overwrite it)", final)
		}
	}
	dir := filepath.Dir(final)
	f, err := os.CreateTemp(dir, "."+filepath.Base(final)+".*.partial")
	if err != nil {
		return nil, fmt.Errorf("cannot write to %s: %w", dir, unwrapPath(err))
	}
	tmp := f.Name()
	f.Chmod(0o644) // CreateTemp makes 0600; a model is meant to be shared
	f.Close()
	return &pendingFile{final: final, tmp: tmp, dir: dir, force: force}, nil
}

// sibling reserves another temporary file beside the output (for an intermediate step);
// the caller removes it.
func (p *pendingFile) sibling(tag string) (string, error) {
	f, err := os.CreateTemp(p.dir, "."+filepath.Base(p.final)+".*."+tag)
	if err != nil {
		return "", fmt.Errorf("cannot write to %s: %w", p.dir, unwrapPath(err))
	}
	f.Close()
	return f.Name(), nil
}

// commit moves the finished file into place and returns its size.
func (p *pendingFile) commit() (int64, error) {
	st, err := os.Stat(p.tmp)
	if err != nil {
		return 0, err
	}
	if p.force {
		err = os.Rename(p.tmp, p.final)
	} else {
		// A hard link fails if the name exists: no check-then-rename race.
		if err = os.Link(p.tmp, p.final); err == nil {
			os.Remove(p.tmp)
		} else if errors.Is(err, os.ErrExist) {
			return 0, fmt.Errorf("%s already exists (use --force to overwrite it)", p.final)
		} else if _, serr := os.Stat(p.final); os.IsNotExist(serr) {
			err = os.Rename(p.tmp, p.final) // file systems without hard links
		}
	}
	if err != nil {
		return 0, fmt.Errorf("move %s into place: %w", p.final, unwrapPath(err))
	}
	p.done = true
	if d, err := os.Open(p.dir); err == nil {
		d.Sync() // make the rename durable
		d.Close()
	}
	return st.Size(), nil
}

// abort removes the temporary file unless it was committed. Safe to call always.
func (p *pendingFile) abort() {
	if !p.done {
		os.Remove(p.tmp)
		p.done = true
	}
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

const gib = float64(1 << 30)

// checkSpace fails early when dir's file system has less than need bytes free (plus a
// margin): better than running out half way through a multi-gigabyte write.
func checkSpace(dir string, need int64) error {
	free, ok := freeSpace(dir)
	if !ok {
		return nil
	}
	need += need/50 + 1<<20
	if free < need {
		return fmt.Errorf("not enough disk space in %s: this needs about %.2f GiB, %.2f GiB are free", dir, float64(need)/gib, float64(free)/gib)
	}
	return nil
}

// diskError describes a failed write as well as we can tell after the fact.
func diskError(path string) string {
	if free, ok := freeSpace(filepath.Dir(path)); ok && free < 64<<20 {
		return "no space left on device"
	}
	return "the disk may be full or a file size limit was reached"
}

// estimateSize is about how large g becomes when llama.cpp's quantiser converts it to q.
func estimateSize(g *GGUF, q QuantType) int64 {
	n := g.DataOffset
	for _, t := range g.Tensors {
		typ := t.Type
		if quantizable(t) {
			typ = q.weight
		}
		n += tensorBytes(t, typ) + 32
	}
	return n
}

// tensorBytes is the size of t stored as typ (F16 when rows do not fit typ's blocks, as
// llama.cpp's fallback ends).
func tensorBytes(t TensorInfo, typ uint32) int64 {
	blck := int64(typeBlock(typ))
	if blck == 0 || t.Shape[0]%blck != 0 {
		typ, blck = 1, 1
	}
	return int64(typeRowSize(typ, t.Shape[0])) * (t.Elements() / t.Shape[0])
}

// finish checks the written file (it must load, as what kind of model says in the
// error), renames it into place and reports which tensors kept another type than q.
func (f *pendingFile) finish(ctx context.Context, q QuantType, what string) ([]TypeFallback, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if err := VerifyModel(f.tmp); err != nil {
		return nil, 0, fmt.Errorf("the %s model does not load: %w", what, err)
	}
	written, err := Inspect(f.tmp)
	if err != nil {
		return nil, 0, err
	}
	fb, converted := fallbacks(written, q)
	size, err := f.commit()
	if err != nil {
		return nil, 0, err
	}
	warnFallbacks(q, fb, converted)
	return fb, size, nil
}
