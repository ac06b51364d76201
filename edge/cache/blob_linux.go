//go:build linux

package cache

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Blob is a copy of a large body in an anonymous memory file (memfd), so
// the edge can send it with sendfile(2): the kernel hands the pages to the
// socket instead of copying them from user memory. A Blob is reference
// counted: the cache holds one reference while the entry is stored, each
// sendfile holds one while it runs; the file closes with the last.
type Blob struct {
	fd   int
	size int64
	refs atomic.Int64
}

// blobWrite is the largest write that fills a blob. On a disk filesystem
// the page cache sizes a file's folios by the writes that filled it: one
// write of a megabyte makes a few large folios, and every sendfile of the
// file takes and drops a reference on the same one or two of them, from
// both cores at once when the object is popular. In 64 KiB writes, 1 MiB
// hits took 150-161 µs of CPU against 157-179 written whole (five
// alternating rounds of wrk -c32, all five the same way; 16 and 256 KiB
// measured like 64).
const blobWrite = 64 << 10

// NewBlob copies body into a memfd, or, when dir is set, into an unnamed
// temporary file in dir (O_TMPFILE); nil when that fails (the body is
// then sent from memory as usual).
func NewBlob(dir string, body []byte) *Blob {
	w := NewBlobWriter(dir)
	w.Write(body)
	return w.Blob()
}

// BlobWriter fills a Blob as a body arrives, part by part, so that the
// copy of a large body is not made in one go once it is complete (1 ms
// for 2 MiB, which held back the next request's answer). Only one
// goroutine at a time may use it. Its methods do nothing on a nil
// BlobWriter (Blob returns nil).
type BlobWriter struct {
	fd     int
	size   int64
	failed bool
}

// NewBlobWriter starts a blob where NewBlob would make it; nil when that
// fails.
func NewBlobWriter(dir string) *BlobWriter {
	fd, err := openBlob(dir)
	if err != nil {
		return nil
	}
	return &BlobWriter{fd: fd}
}

// Write appends p; false once a write has failed (Blob then returns
// nil).
func (w *BlobWriter) Write(p []byte) bool {
	if w == nil || w.failed {
		return false
	}
	for len(p) > 0 {
		n, err := unix.Write(w.fd, p[:min(len(p), blobWrite)])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			w.failed = true
			return false
		}
		p = p[n:]
		w.size += int64(n)
	}
	return true
}

// Size is how many bytes have been written.
func (w *BlobWriter) Size() int64 {
	if w == nil {
		return 0
	}
	return w.size
}

// Blob ends the writing: the blob of what was written, holding one
// reference, or nil after a failure (the file is closed).
func (w *BlobWriter) Blob() *Blob {
	if w == nil {
		return nil
	}
	if w.failed {
		w.Abort()
		return nil
	}
	b := &Blob{fd: w.fd, size: w.size}
	b.refs.Store(1)
	w.fd = -1
	return b
}

// Abort ends the writing without a blob and closes the file.
func (w *BlobWriter) Abort() {
	if w == nil || w.fd < 0 {
		return
	}
	unix.Close(w.fd)
	w.fd, w.failed = -1, true
}

func openBlob(dir string) (int, error) {
	if dir == "" {
		return unix.MemfdCreate("edged-object", unix.MFD_CLOEXEC)
	}
	return unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
}

// CheckBlobDir reports whether blobs can be made in dir ("" always can).
func CheckBlobDir(dir string) error {
	fd, err := openBlob(dir)
	if err != nil {
		return fmt.Errorf("unnamed temporary file (O_TMPFILE) in %s: %w", dir, err)
	}
	return unix.Close(fd)
}

// Acquire takes a reference; false once the blob is released for good.
func (b *Blob) Acquire() bool {
	for {
		n := b.refs.Load()
		if n <= 0 {
			return false
		}
		if b.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release drops a reference, closing the file with the last one.
func (b *Blob) Release() {
	if b.refs.Add(-1) == 0 {
		unix.Close(b.fd)
	}
}

// FD is the memfd's descriptor (valid while a reference is held).
func (b *Blob) FD() int { return b.fd }

// Size is the body's length.
func (b *Blob) Size() int64 { return b.size }
