package benchkit

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// WriteReport writes dir/report.md with one table per case and a PNG plot
// of each case's metrics (bars at the median, whiskers from min to max).
func (r *Results) WriteReport(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# edgestack benchmark report\n\n")
	fmt.Fprintf(&b, "Run %s on `%s`: %d CPUs (%s), %s, %s, %s; load average at start %s.\n\n",
		r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Host, r.Machine.CPUs, r.Machine.CPUModel, r.Machine.MemTotal, r.Machine.Kernel, r.Machine.GoVersion, r.Machine.LoadAvg)
	b.WriteString("Each cell is the median of the runs, ± half the min–max range as a percentage of the median. ")
	b.WriteString("Subjects ran alternately (ours, theirs, ours, ...). **ratio** compares edgestack with the best peer: above 1 means edgestack is better ")
	b.WriteString("(higher throughput, or lower CPU/latency/memory). On a shared 2-core machine the load generator competes with the server: server CPU per request is the steadiest figure.\n\n")
	if len(r.Versions) > 0 {
		b.WriteString("| peer | version |\n|---|---|\n")
		for _, k := range sortedKeys(r.Versions) {
			fmt.Fprintf(&b, "| %s | %s |\n", k, strings.ReplaceAll(r.Versions[k], "|", "/"))
		}
		b.WriteString("\n")
	}
	for _, s := range r.Suites {
		fmt.Fprintf(&b, "## %s\n\n", s.Title)
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		if len(s.Notes) > 0 {
			b.WriteString("\n")
		}
		for _, c := range s.Cases {
			fmt.Fprintf(&b, "### %s\n\n", c.Name)
			b.WriteString("| metric |")
			for _, sub := range c.Subjects {
				name := sub.Name
				if sub.Ours {
					name = "**" + name + "**"
				}
				fmt.Fprintf(&b, " %s |", name)
			}
			b.WriteString(" ratio |\n|---|")
			for range c.Subjects {
				b.WriteString("---:|")
			}
			b.WriteString("---:|\n")
			for _, m := range c.Metrics {
				fmt.Fprintf(&b, "| %s |", m.Name)
				for _, sub := range c.Subjects {
					if sub.Skipped != "" {
						fmt.Fprintf(&b, " skipped: %s |", sub.Skipped)
						continue
					}
					fmt.Fprintf(&b, " %s |", cell(sub.Summary[m.Key]))
				}
				if ratio, peer := c.Ratio(m); !math.IsNaN(ratio) {
					fmt.Fprintf(&b, " %.2f× vs %s |\n", ratio, peer)
				} else {
					b.WriteString(" – |\n")
				}
			}
			png := fileName(s.Name + "-" + c.Name + ".png")
			if err := c.plot(filepath.Join(dir, png)); err == nil {
				fmt.Fprintf(&b, "\n![%s](%s)\n\n", c.Name, png)
			} else {
				fmt.Fprintf(&b, "\n(plot failed: %v)\n\n", err)
			}
		}
	}
	p := filepath.Join(dir, "report.md")
	return p, os.WriteFile(p, []byte(b.String()), 0o644)
}

func cell(s Summary) string {
	if s.N == 0 || math.IsNaN(s.Median) {
		return "–"
	}
	v := fmt.Sprintf("%.4g", s.Median)
	if s.Median >= 1000 {
		v = fmt.Sprintf("%.0f", s.Median)
	}
	if sp := s.SpreadPct(); s.N > 1 && !math.IsNaN(sp) {
		v += fmt.Sprintf(" ±%.0f%%", sp)
	}
	return v
}

// plot draws one panel per metric, side by side, bars per subject.
func (c *Case) plot(path string) error {
	const panelW, panelH = 3.2 * vg.Inch, 3 * vg.Inch
	var plots []*plot.Plot
	for _, m := range c.Metrics {
		if m.Key == MetricErrors.Key {
			continue
		}
		p := plot.New()
		p.Title.Text = m.Name
		var names []string
		var vals plotter.Values
		var errs plotter.YErrors
		var ours []bool
		for _, s := range c.Subjects {
			sm, ok := s.Summary[m.Key]
			if !ok || s.Skipped != "" || sm.N == 0 || math.IsNaN(sm.Median) {
				continue
			}
			names = append(names, s.Name)
			ours = append(ours, s.Ours)
			vals = append(vals, sm.Median)
			errs = append(errs, struct{ Low, High float64 }{sm.Median - sm.Min, sm.Max - sm.Median})
		}
		if len(vals) == 0 {
			continue
		}
		for i, v := range vals {
			bars, err := plotter.NewBarChart(plotter.Values{v}, vg.Points(28))
			if err != nil {
				return err
			}
			bars.XMin = float64(i)
			bars.LineStyle.Width = 0
			bars.Color = color.RGBA{R: 150, G: 155, B: 160, A: 255} // peers grey
			if ours[i] {
				bars.Color = color.RGBA{R: 30, G: 120, B: 200, A: 255} // edgestack blue
			}
			p.Add(bars)
		}
		pts := make(plotter.XYs, len(vals))
		for i := range vals {
			pts[i].X, pts[i].Y = float64(i), vals[i]
		}
		eb, err := plotter.NewYErrorBars(struct {
			plotter.XYer
			plotter.YErrorer
		}{pts, errs})
		if err == nil {
			p.Add(eb)
		}
		p.NominalX(names...)
		p.Y.Min = 0
		plots = append(plots, p)
	}
	if lp := c.latencyCurve(); lp != nil {
		plots = append(plots, lp)
	}
	if len(plots) == 0 {
		return fmt.Errorf("nothing to plot")
	}
	img := vg.Length(len(plots)) * panelW
	canvas, err := newPNG(img, panelH)
	if err != nil {
		return err
	}
	for i, p := range plots {
		p.Draw(canvas.sub(vg.Length(i)*panelW, panelW, panelH))
	}
	return canvas.save(path)
}

// latencyCurve draws latency against percentile (p50, p75, p90, p99, the
// medians over the runs), one line per subject, when the case has latency
// percentiles; nil otherwise.
func (c *Case) latencyCurve() *plot.Plot {
	pcts := []struct {
		key string
		x   float64
	}{{MetricP50.Key, 50}, {keyP75, 75}, {keyP90, 90}, {MetricP99.Key, 99}}
	p := plot.New()
	p.Title.Text = "latency by percentile (ms)"
	p.X.Label.Text = "percentile"
	p.Legend.Top = true
	p.Legend.Left = true
	peer, lines := 0, 0
	for _, s := range c.Subjects {
		if s.Skipped != "" {
			continue
		}
		var pts plotter.XYs
		for _, pc := range pcts {
			if v, ok := medianSample(s.Samples, pc.key); ok {
				pts = append(pts, plotter.XY{X: pc.x, Y: v})
			}
		}
		if len(pts) < 2 {
			continue
		}
		line, marks, err := plotter.NewLinePoints(pts)
		if err != nil {
			continue
		}
		col := color.Color(color.RGBA{R: 30, G: 120, B: 200, A: 255}) // edgestack blue
		if !s.Ours {
			greys := []color.RGBA{{R: 120, G: 120, B: 120, A: 255}, {R: 190, G: 110, B: 40, A: 255}, {R: 90, G: 160, B: 90, A: 255}}
			col = greys[peer%len(greys)]
			peer++
		}
		line.Color, marks.Color = col, col
		p.Add(line, marks)
		p.Legend.Add(s.Name, line, marks)
		lines++
	}
	if lines == 0 {
		return nil
	}
	p.X.Min, p.X.Max = 45, 100
	p.Y.Min = 0
	p.X.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 50, Label: "p50"}, {Value: 75, Label: "p75"}, {Value: 90, Label: "p90"}, {Value: 99, Label: "p99"}})
	return p
}

// medianSample is the median of key over samples that have it.
func medianSample(samples []map[string]float64, key string) (float64, bool) {
	var xs []float64
	for _, smp := range samples {
		if v, ok := smp[key]; ok {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return 0, false
	}
	return Summarize(xs).Median, true
}

func fileName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
