package edge

import (
	"slices"
	"sync"
	"time"
)

// sendChoice picks, for large hits that have a sendfile copy, between
// sendfile(2) from the copy and a write from memory, by what each way has
// cost the whole process on its own traffic. Which one is cheaper differs
// between machines (bench/edge/README.md: 1 MiB hits took 170 µs of CPU
// by sendfile against 290 by a write on an AMD VM, and 290 against 220 on
// an Intel one), and neither a start-up probe nor the CPU time of the
// system calls ranked them: on the AMD VM a write measured 187 µs in its
// calls and sendfile 203, the wrong way round, because the kernel charges
// loopback and softirq work to whichever thread runs when it is done, so
// part of one send's cost lands in another's call or outside any.
//
// So time is cut into epochs, each sending every large hit one way, and
// an epoch's cost is the process's CPU time over it (all its threads,
// CLOCK_PROCESS_CPUTIME_ID) per byte of the large hits it sent. The two
// ways alternate until each has sendLearn epochs; then the one with the
// lower median cost is preferred, and every sendExplore-th epoch still
// tries the other, so that a change of load or machine is seen.
type sendChoice struct {
	cpu func() time.Duration // the process's CPU time so far
	now func() time.Time
	// epochSends and epochMin: an epoch ends at the first send after it
	// has had this many sends and lasted this long (sendEpochSends,
	// sendEpochMin; tests shorten them).
	epochSends int
	epochMin   time.Duration

	mu       sync.Mutex
	sendfile bool // the current epoch's way
	prefer   bool // the way preferred once both are measured
	epochs   uint64
	start    time.Time // of the current epoch; zero before the first send
	cpu0     time.Duration
	sends    int
	bytes    int64
	costs    [2]costRing // CPU ns per byte of recent epochs: [write, sendfile]
}

// sendChoiceMin is the smallest hit whose way out is chosen; smaller ones
// with a copy always use sendfile, which won below 1 MiB wherever it was
// measured (100 KiB hits: 12.0–12.4 µs of CPU by sendfile against 17.1 by
// a write on the Intel VM).
const sendChoiceMin = 512 << 10

const (
	// sendEpochSends and sendEpochMin: an epoch has at least this many
	// large sends and lasts at least this long, so that its CPU time is
	// mostly theirs and not one burst's.
	sendEpochSends = 32
	sendEpochMin   = 50 * time.Millisecond
	// sendEpochMax: a longer epoch is not counted. Its large sends were
	// sparse, so its CPU time is mostly other work's.
	sendEpochMax = 2 * time.Second
	// sendLearn epochs of each way before one is preferred; costs keep
	// this many epochs' figures per way.
	sendLearn = 8
	// sendExplore: every so many epochs try the way not preferred (at
	// most 1/32 of large sends go the dearer way).
	sendExplore = 32
	// sendSwitch: the other way's median must be this much lower to
	// switch, so that noise does not flip the choice back and forth.
	sendSwitch = 0.95
)

// costRing keeps the last sendLearn figures of one way.
type costRing struct {
	v [sendLearn]float64
	n int
}

func (r *costRing) add(x float64) {
	r.v[r.n%sendLearn] = x
	r.n++
}

func (r *costRing) median() float64 {
	s := slices.Clone(r.v[:min(r.n, sendLearn)])
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}

func newSendChoice(cpu func() time.Duration, now func() time.Time) *sendChoice {
	// sendfile first: what edged did before choosing.
	return &sendChoice{cpu: cpu, now: now, epochSends: sendEpochSends, epochMin: sendEpochMin, sendfile: true, prefer: true}
}

// sendSwitchNote reports a change of the preferred way, for the log.
type sendSwitchNote struct {
	switched bool
	sendfile bool       // the way now preferred
	cost     [2]float64 // the medians behind it, CPU ns per byte: [write, sendfile]
}

// pick says whether a large send of size bytes goes by sendfile, ending
// the current epoch first when it is due.
func (sc *sendChoice) pick(size int64) (sendfile bool, note sendSwitchNote) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	now := sc.now()
	switch {
	case sc.start.IsZero():
		sc.start, sc.cpu0 = now, sc.cpu()
	case sc.sends >= sc.epochSends && now.Sub(sc.start) >= sc.epochMin:
		note = sc.endEpoch(now)
	}
	sc.sends++
	sc.bytes += size
	return sc.sendfile, note
}

// endEpoch records the epoch's cost and sets the next one's way.
func (sc *sendChoice) endEpoch(now time.Time) (note sendSwitchNote) {
	cpu := sc.cpu()
	if now.Sub(sc.start) <= sendEpochMax && sc.bytes > 0 {
		sc.costs[b2i(sc.sendfile)].add(float64(cpu-sc.cpu0) / float64(sc.bytes))
	}
	sc.epochs++
	sc.start, sc.cpu0, sc.sends, sc.bytes = now, cpu, 0, 0
	if sc.costs[0].n < sendLearn || sc.costs[1].n < sendLearn {
		sc.sendfile = !sc.sendfile
		return note
	}
	cost := [2]float64{sc.costs[0].median(), sc.costs[1].median()}
	if cost[b2i(!sc.prefer)] < cost[b2i(sc.prefer)]*sendSwitch {
		sc.prefer = !sc.prefer
		note = sendSwitchNote{switched: true, sendfile: sc.prefer, cost: cost}
	}
	sc.sendfile = sc.prefer
	if sc.epochs%sendExplore == 0 {
		sc.sendfile = !sc.prefer
	}
	return note
}

// prefers reports the way preferred now and whether both ways have been
// measured enough to say (for tests).
func (sc *sendChoice) prefers() (sendfile, settled bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.prefer, sc.costs[0].n >= sendLearn && sc.costs[1].n >= sendLearn
}

// logSendSwitch logs a change of the way large hits go out.
func (h *Handler) logSendSwitch(n sendSwitchNote) {
	if !n.switched {
		return
	}
	method := "write"
	if n.sendfile {
		method = "sendfile"
	}
	h.log.Info("large hits now go out by the way measured cheaper", "from_bytes", sendChoiceMin, "method", method,
		"write_ns_per_kib", int(n.cost[0]*1024), "sendfile_ns_per_kib", int(n.cost[1]*1024))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
