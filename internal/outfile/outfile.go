// Package outfile writes large outputs (merged, quantised and converted models) under a
// hidden temporary name beside their final path, on the same file system, and moves them
// into place only when they are complete and verified. Until then a failure leaves
// nothing behind, and RemovePending clears what an interrupted process was writing.
package outfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// File is an output being written to Tmp, to become Final on Commit.
type File struct {
	Final, Tmp, Dir string
	force, done     bool
}

var (
	mu      sync.Mutex
	pending = map[string]bool{} // temporary files of this process not yet committed or removed
)

func track(path string, on bool) {
	mu.Lock()
	defer mu.Unlock()
	if on {
		pending[path] = true
	} else {
		delete(pending, path)
	}
}

// RemovePending deletes every temporary file this process is still writing: for a
// command that exits at once on a second Ctrl-C, while native code it cannot interrupt
// (llama.cpp's quantiser) holds them.
func RemovePending() {
	mu.Lock()
	defer mu.Unlock()
	for p := range pending {
		os.Remove(p)
		delete(pending, p)
	}
}

// Create reserves a temporary file for final. Without force an existing final path is an
// error now, and again at commit time (another writer may have won meanwhile). need is
// about how many bytes will be written: too little free space is an error now rather
// than half way through.
func Create(final string, force bool, need int64) (*File, error) {
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
	if err := CheckSpace(dir, need); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(final)+".*.partial")
	if err != nil {
		return nil, fmt.Errorf("cannot write to %s: %w", dir, Unwrap(err))
	}
	track(f.Name(), true)
	f.Chmod(0o644) // CreateTemp makes 0600; a model is meant to be shared
	f.Close()
	return &File{Final: final, Tmp: f.Name(), Dir: dir, force: force}, nil
}

// Sibling reserves another temporary file beside the output, for an intermediate step;
// the caller removes it (RemovePending does too).
func (p *File) Sibling(tag string) (string, error) { return Scratch(p.Final, tag) }

// Scratch reserves a hidden temporary file beside final (which need not exist yet), for
// an intermediate result; the caller removes it with Remove (RemovePending does too).
func Scratch(final, tag string) (string, error) {
	dir := filepath.Dir(final)
	f, err := os.CreateTemp(dir, "."+filepath.Base(final)+".*."+tag)
	if err != nil {
		return "", fmt.Errorf("cannot write to %s: %w", dir, Unwrap(err))
	}
	track(f.Name(), true)
	f.Close()
	return f.Name(), nil
}

// Remove deletes a sibling or scratch file.
func Remove(path string) {
	os.Remove(path)
	track(path, false)
}

// Commit moves the finished file into place and returns its size.
func (p *File) Commit() (int64, error) {
	st, err := os.Stat(p.Tmp)
	if err != nil {
		return 0, err
	}
	if p.force {
		err = os.Rename(p.Tmp, p.Final)
	} else {
		// A hard link fails if the name exists: no check-then-rename race.
		if err = os.Link(p.Tmp, p.Final); err == nil {
			os.Remove(p.Tmp)
		} else if errors.Is(err, os.ErrExist) {
			return 0, fmt.Errorf("%s already exists (use --force to overwrite it)", p.Final)
		} else if _, serr := os.Stat(p.Final); os.IsNotExist(serr) {
			err = os.Rename(p.Tmp, p.Final) // file systems without hard links
		}
	}
	if err != nil {
		return 0, fmt.Errorf("move %s into place: %w", p.Final, Unwrap(err))
	}
	p.done = true
	track(p.Tmp, false)
	if d, err := os.Open(p.Dir); err == nil {
		d.Sync() // make the rename durable
		d.Close()
	}
	return st.Size(), nil
}

// Abort removes the temporary file unless it was committed. Safe to call always.
func (p *File) Abort() {
	if !p.done {
		Remove(p.Tmp)
		p.done = true
	}
}

// Unwrap drops the path from a file system error: messages name the path themselves.
func Unwrap(err error) error {
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

// IsDiskFull reports whether err says the file system or a size limit is exhausted.
func IsDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EDQUOT)
}

const gib = float64(1 << 30)

// CheckSpace fails when dir's file system has less than need bytes free (plus a margin).
func CheckSpace(dir string, need int64) error {
	if need <= 0 {
		return nil
	}
	free, ok := FreeSpace(dir)
	if !ok {
		return nil
	}
	need += need/50 + 1<<20
	if free < need {
		return fmt.Errorf("not enough disk space in %s: this needs about %.2f GiB, %.2f GiB are free", dir, float64(need)/gib, float64(free)/gib)
	}
	return nil
}

// DiskError describes a failed write of path as well as can be told after the fact.
func DiskError(path string) string {
	if free, ok := FreeSpace(filepath.Dir(path)); ok && free < 64<<20 {
		return "no space left on device"
	}
	return "the disk may be full or a file size limit was reached"
}
