package train

import (
	"bytes"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// writePlot draws the training and evaluation loss curves of log into a PNG.
func writePlot(path, title string, log []LogEntry) error {
	p := plot.New()
	p.Title.Text = title
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
