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
	fd, err := openBlob(dir)
	if err != nil {
		return nil
	}
	for off := 0; off < len(body); {
		n, err := unix.Write(fd, body[off:min(len(body), off+blobWrite)])
		if err != nil || n <= 0 {
			unix.Close(fd)
			return nil
		}
		off += n
	}
	b := &Blob{fd: fd, size: int64(len(body))}
	b.refs.Store(1)
	return b
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
