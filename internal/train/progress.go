package train

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress writes what the loop is doing. On a terminal one live line is redrawn after
// every step; anywhere else (a log file, a pipe, a test) plain lines are written every
// logging_steps, so logs stay readable.
type progress struct {
	w    io.Writer
	tty  bool
	live int // length of the live line on screen; 0: none
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		w = io.Discard
	}
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// line writes a permanent line, first clearing any live line.
func (p *progress) line(format string, args ...any) {
	p.clear()
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *progress) clear() {
	if p.live > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.live))
		p.live = 0
	}
}

// step reports a finished optimizer step.
func (p *progress) step(s stepReport, logged bool) {
	text := fmt.Sprintf("step %d/%d  epoch %.2f  loss %.4f  lr %.2e  grad_norm %.3f  %.0f tok/s  ETA %s",
		s.step, s.total, s.epoch, s.loss, s.lr, s.gradNorm, s.tokPerS, fmtDuration(s.eta))
	if !p.tty {
		if logged {
			fmt.Fprintln(p.w, text)
		}
		return
	}
	pad := ""
	if n := len(text); n < p.live {
		pad = strings.Repeat(" ", p.live-n)
	}
	fmt.Fprint(p.w, "\r"+text+pad)
	p.live = len(text)
}

// done ends the live line so later output starts on a fresh line.
func (p *progress) done() {
	if p.live > 0 {
		fmt.Fprintln(p.w)
		p.live = 0
	}
}

type stepReport struct {
	step, total               int
	epoch, loss, lr, gradNorm float64
	tokPerS                   float64
	eta                       time.Duration
}

func fmtDuration(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	d = d.Round(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case h > 0:
		return fmt.Sprintf("%dh%02dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm%02ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}

func fmtBytes(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
}
