package benchkit

import (
	"math"
	"slices"
)

// Summary is the median and spread of repeated samples.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// P25 and P75 bound the middle half of the samples.
	P25 float64 `json:"p25"`
	P75 float64 `json:"p75"`
}

// Summarize returns the summary of xs (NaNs dropped); N is 0 when
// nothing is left.
func Summarize(xs []float64) Summary {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Summary{} // N == 0: nothing measured
	}
	slices.Sort(v)
	return Summary{N: len(v), Median: Quantile(v, 0.5), Min: v[0], Max: v[len(v)-1], P25: Quantile(v, 0.25), P75: Quantile(v, 0.75)}
}

// Quantile of sorted xs by linear interpolation.
func Quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

// SpreadPct is the half-width of the min..max range relative to the median,
// in percent: how much the machine's noise moved this figure.
func (s Summary) SpreadPct() float64 {
	if s.Median == 0 || math.IsNaN(s.Median) {
		return math.NaN()
	}
	return 100 * (s.Max - s.Min) / 2 / math.Abs(s.Median)
}
