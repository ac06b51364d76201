package edge

import (
	"math/bits"
	"sync"
	"time"
)

// sendChoice picks, for each large hit that has a sendfile copy, between
// sendfile(2) from the copy and a write from memory, by what each has
// cost this process on its own traffic: CPU time measured around the
// system calls of sampled sends, per byte, by size class. Which one is
// cheaper differs between machines and sizes (bench/edge/README.md: on
// one VM sendfile from an ext4 copy won at 1 MiB by a third, on another
// it lost by a fifth while still winning at 100 KiB), and no start-up
// probe predicted it: a probe's sends are not the real load's. The system
// calls' CPU time is the right measure because most of a loopback or LAN
// send's cost is spent in them (for sendfile on that VM, 278–280 µs per 1
// MiB hit in the calls against 290–298 for the whole process).
type sendChoice struct {
	classes [numSendClasses]sendClass
}

// Size classes: [64 KiB, 128 KiB), [128 KiB, 256 KiB), ... and 8 MiB on.
const numSendClasses = 8

// sendChoiceMin is the smallest hit whose way out is chosen by measuring;
// smaller ones with a copy always use sendfile. Below it the calls' CPU
// time did not rank the two ways: on the Intel VM, 100 KiB hits measured
// 116–143 ns per KiB in the calls either way, while the whole process
// spent 12.0–12.4 µs per hit with sendfile and 17.1 with writes, so the
// choice went back and forth and cost 10%. From 1 MiB the calls hold most
// of the cost, and what they miss is sendfile's (receive work the kernel
// defers past the call), so an error leans to sendfile, edged's way before.
const sendChoiceMin = 512 << 10

const (
	// sendMinSamples per method before the cheaper one is preferred; until
	// then the methods alternate.
	sendMinSamples = 16
	// sendExplore: every so many sends of a class try the method not
	// preferred, so that a change of load or machine is seen (at most
	// 1/32 of large sends on the dearer method).
	sendExplore = 32
	// sendMeasure: every so many sends of the preferred method are
	// measured (two clock reads per system call).
	sendMeasure = 8
	// sendSwitch: the other method must be this much cheaper to switch,
	// so that noise does not flip the choice back and forth.
	sendSwitch = 0.95
	// sendWeight of a new sample in the moving average.
	sendWeight = 1.0 / 16
	// sendOutlier: a sample counts as at most this many times the average
	// (a send that waited out a burst of interrupts in its call).
	sendOutlier = 4
)

type sendClass struct {
	mu      sync.Mutex
	sends   uint64
	cost    [2]float64 // moving average of ns per byte: [write, sendfile]
	samples [2]int
	useSF   bool
}

func sendClassOf(size int64) int {
	return min(max(bits.Len64(uint64(size>>16))-1, 0), numSendClasses-1)
}

// pick says whether a send of size bytes uses sendfile, and whether it is
// to be measured (then note gets its CPU time).
func (sc *sendChoice) pick(size int64) (sendfile, measure bool) {
	c := &sc.classes[sendClassOf(size)]
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sends++
	switch {
	case c.samples[0] < sendMinSamples || c.samples[1] < sendMinSamples:
		return c.sends%2 == 0, true
	case c.sends%sendExplore == 0:
		return !c.useSF, true
	default:
		return c.useSF, c.sends%sendMeasure == 0
	}
}

// note records what a measured send cost; switched says the class now
// prefers the other method (nowSendfile), cost the averages behind it.
func (sc *sendChoice) note(size int64, sendfile bool, cpu time.Duration) (switched, nowSendfile bool, cost [2]float64) {
	if size <= 0 || cpu <= 0 {
		return false, false, cost
	}
	c := &sc.classes[sendClassOf(size)]
	c.mu.Lock()
	defer c.mu.Unlock()
	i := b2i(sendfile)
	per := float64(cpu) / float64(size)
	switch n := c.samples[i]; {
	case n < sendMinSamples: // the mean of the first ones
		c.cost[i] += (per - c.cost[i]) / float64(n+1)
	default: // then a moving average, one sample moving it at most so far
		c.cost[i] += (min(per, c.cost[i]*sendOutlier) - c.cost[i]) * sendWeight
	}
	c.samples[i]++
	if c.samples[0] >= sendMinSamples && c.samples[1] >= sendMinSamples &&
		c.cost[b2i(!c.useSF)] < c.cost[b2i(c.useSF)]*sendSwitch {
		c.useSF = !c.useSF
		switched = true
	}
	return switched, c.useSF, c.cost
}

// noteSend records a measured large send and logs a change of method.
func (h *Handler) noteSend(size int64, sendfile bool, cpu time.Duration) {
	if switched, nowSF, cost := h.sends.note(size, sendfile, cpu); switched {
		method := "write"
		if nowSF {
			method = "sendfile"
		}
		h.log.Info("large hits of this size now go out by the cheaper way measured",
			"from_bytes", int64(64<<10)<<sendClassOf(size), "method", method,
			"write_ns_per_kib", int(cost[0]*1024), "sendfile_ns_per_kib", int(cost[1]*1024))
	}
}

// prefers reports the method a class prefers now (for metrics and tests)
// and whether both methods have been measured enough to say.
func (sc *sendChoice) prefers(class int) (sendfile, settled bool) {
	c := &sc.classes[class]
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.useSF, c.samples[0] >= sendMinSamples && c.samples[1] >= sendMinSamples
}

func newSendChoice() *sendChoice {
	sc := &sendChoice{}
	for i := range sc.classes {
		sc.classes[i].useSF = true // what edged did before measuring
	}
	return sc
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
