//go:build linux

package cache

import (
	"bytes"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// readBlob reads a blob's file whole, from its start.
func readBlob(t *testing.T, b *Blob) []byte {
	t.Helper()
	got := make([]byte, b.Size()+1) // one more: a longer file shows
	n, err := unix.Pread(b.FD(), got, 0)
	if err != nil {
		t.Fatal(err)
	}
	return got[:n]
}

// fdOpen reports whether fd is an open descriptor of this process.
func fdOpen(fd int) bool {
	_, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	return err == nil
}

// TestBlobWriter: a blob written part by part, in memfd or in a
// directory, holds the parts in order; a blob given up closes its file;
// a nil writer (none could be made) does nothing and makes no blob.
func TestBlobWriter(t *testing.T) {
	body := make([]byte, 700<<10)
	for i := range body {
		body[i] = byte(rand.IntN(256))
	}
	for _, dir := range []string{"", t.TempDir()} {
		if err := CheckBlobDir(dir); err != nil {
			t.Log(err) // a filesystem without O_TMPFILE
			continue
		}
		for _, parts := range [][]int{{0}, {1}, {blobWrite}, {blobWrite + 1, 3}, {100 << 10, 0, 200 << 10, 17}} {
			w := NewBlobWriter(dir)
			if w == nil {
				t.Fatalf("dir %q: no writer", dir)
			}
			off := 0
			for _, n := range parts {
				if !w.Write(body[off : off+n]) {
					t.Fatalf("dir %q, parts %v: write of %d failed", dir, parts, n)
				}
				off += n
				if w.Size() != int64(off) {
					t.Fatalf("dir %q, parts %v: size %d after %d bytes", dir, parts, w.Size(), off)
				}
			}
			b := w.Blob()
			if b == nil || b.Size() != int64(off) || !bytes.Equal(readBlob(t, b), body[:off]) {
				t.Fatalf("dir %q, parts %v: the blob does not hold the %d bytes written", dir, parts, off)
			}
			fd := b.FD()
			b.Release()
			if fdOpen(fd) {
				t.Errorf("dir %q: file open after the last release", dir)
			}
		}
		w := NewBlobWriter(dir)
		w.Write(body[:10])
		fd := w.fd
		w.Abort()
		if fdOpen(fd) {
			t.Errorf("dir %q: file open after Abort", dir)
		}
		if w.Write(body) || w.Blob() != nil {
			t.Errorf("dir %q: a writer given up still writes or makes a blob", dir)
		}
		w.Abort() // twice: nothing more to close
	}
	var none *BlobWriter
	if none.Write(body) || none.Size() != 0 || none.Blob() != nil {
		t.Error("a nil writer wrote or made a blob")
	}
	none.Abort()
}
