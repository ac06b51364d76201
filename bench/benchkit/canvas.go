package benchkit

import (
	"os"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

type pngCanvas struct {
	c *vgimg.Canvas
}

func newPNG(w, h vg.Length) (*pngCanvas, error) {
	return &pngCanvas{c: vgimg.New(w, h)}, nil
}

// sub is the panel of width w starting at x.
func (p *pngCanvas) sub(x, w, h vg.Length) draw.Canvas {
	dc := draw.New(p.c)
	return draw.Crop(dc, x, x+w-dc.Max.X, 0, h-dc.Max.Y)
}

func (p *pngCanvas) save(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: p.c}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
