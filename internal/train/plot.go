package train

import (
	"bytes"
	"image/color"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// writePlot draws the training and evaluation loss curves of log into a PNG.
func writePlot(path, title string, log []LogEntry) error {
	p := plot.New()
	p.Title.Text = title
	p.Title.Padding = vg.Points(8)
	p.Y.Tick.Marker = decimalTicks{}
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss"
	p.Add(plotter.NewGrid())

	var trainXY, evalXY plotter.XYs
	for _, e := range log {
		trainXY = append(trainXY, plotter.XY{X: float64(e.Step), Y: e.Loss})
		if e.EvalLoss != nil {
			evalXY = append(evalXY, plotter.XY{X: float64(e.Step), Y: *e.EvalLoss})
		}
	}
	if len(trainXY) > 0 {
		l, err := plotter.NewLine(trainXY)
		if err != nil {
			return err
		}
		l.Color = color.RGBA{R: 31, G: 119, B: 180, A: 255}
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add("training loss", l)
	}
	if len(evalXY) > 0 {
		l, pts, err := plotter.NewLinePoints(evalXY)
		if err != nil {
			return err
		}
		c := color.RGBA{R: 255, G: 127, B: 14, A: 255}
		l.Color, pts.Color = c, c
		l.Width = vg.Points(1.5)
		pts.Shape = draw.CircleGlyph{}
		p.Add(l, pts)
		p.Legend.Add("eval loss", l, pts)
	}
	p.Legend.Top = true
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(8), -vg.Points(4)
	w, err := p.WriterTo(8*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		return err
	}
	return writeFileAtomic(path, buf.Bytes())
}

// decimalTicks labels gonum's default ticks with as many decimals as their spacing
// needs: a loss curve over a narrow range would otherwise read "12, 12, 12".
type decimalTicks struct{}

func (decimalTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	step := math.Inf(1)
	prev := math.NaN()
	for _, t := range ticks {
		if t.Label == "" {
			continue
		}
		if !math.IsNaN(prev) {
			step = math.Min(step, t.Value-prev)
		}
		prev = t.Value
	}
	digits := 0
	if step > 0 && !math.IsInf(step, 1) {
		digits = max(0, int(math.Ceil(-math.Log10(step)+1e-9)))
	}
	for i, t := range ticks {
		if t.Label != "" {
			ticks[i].Label = strconv.FormatFloat(t.Value, 'f', digits, 64)
		}
	}
	return ticks
}
