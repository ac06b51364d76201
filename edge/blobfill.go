package edge

import (
	"sync/atomic"

	"github.com/edgestack/edgestack/edge/cache"
)

// blobFill makes the sendfile copy of a body being filled (growing), on
// a goroutine of its own, from the filled parts the reader hands it as
// they arrive: the reader never waits on the copy's file (on a disk, the
// kernel's writeback can hold a write up for long), and the copy is not
// made in one go once the body is complete.
type blobFill struct {
	parts  chan []byte
	done   chan struct{} // closed when the writer has stopped
	queued int           // bytes handed over (only the reader uses it)
	// dropped gives the copy up: the writer then closes its file.
	dropped atomic.Bool
	w       *cache.BlobWriter // the writer's until done is closed
}

// blobQueue is how many parts may wait for the writer; a copy further
// behind is given up rather than hold the reader.
const blobQueue = 16

// startBlobFill starts the writer on run (a goroutine of its own) making
// the copy in dir (cache.NewBlobWriter's).
func startBlobFill(dir string, run func(func())) *blobFill {
	f := &blobFill{parts: make(chan []byte, blobQueue), done: make(chan struct{})}
	run(func() {
		defer close(f.done)
		f.w = cache.NewBlobWriter(dir)
		for p := range f.parts {
			if !f.dropped.Load() && !f.w.Write(p) {
				f.dropped.Store(true)
			}
		}
		if f.dropped.Load() {
			f.w.Abort()
		}
	})
	return f
}

// add hands the writer p, filled bytes that never change again; false
// (the copy given up) when it is too far behind.
func (f *blobFill) add(p []byte) bool {
	select {
	case f.parts <- p:
		f.queued += len(p)
		return true
	default:
		f.drop()
		return false
	}
}

// drop gives the copy up without waiting for the writer.
func (f *blobFill) drop() {
	f.dropped.Store(true)
	close(f.parts)
}

// finish waits for the writer and returns the copy, or nil when it was
// given up, failed, or does not hold size bytes.
func (f *blobFill) finish(size int) *cache.Blob {
	close(f.parts)
	<-f.done
	if f.dropped.Load() || f.w.Size() != int64(size) {
		f.w.Abort()
		return nil
	}
	return f.w.Blob()
}
