//go:build !linux

package cache

import "errors"

// Blob is a sendfile-able copy of a body; only on Linux.
type Blob struct{}

// NewBlob returns nil off Linux.
func NewBlob(string, []byte) *Blob { return nil }

// BlobWriter fills a Blob; only on Linux.
type BlobWriter struct{}

// NewBlobWriter returns nil off Linux.
func NewBlobWriter(string) *BlobWriter { return nil }

// Write fails off Linux.
func (w *BlobWriter) Write([]byte) bool { return false }

// Size is 0 off Linux.
func (w *BlobWriter) Size() int64 { return 0 }

// Blob returns nil off Linux.
func (w *BlobWriter) Blob() *Blob { return nil }

// Abort does nothing off Linux.
func (w *BlobWriter) Abort() {}

// CheckBlobDir accepts only "" off Linux.
func CheckBlobDir(dir string) error {
	if dir == "" {
		return nil
	}
	return errors.New("sendfile copies in a directory need Linux")
}

// Acquire always fails off Linux.
func (b *Blob) Acquire() bool { return false }

// Release does nothing off Linux.
func (b *Blob) Release() {}

// FD is -1 off Linux.
func (b *Blob) FD() int { return -1 }

// Size is 0 off Linux.
func (b *Blob) Size() int64 { return 0 }
