//go:build !linux

package cache

// Blob is a sendfile-able copy of a body; only on Linux.
type Blob struct{}

// NewBlob returns nil off Linux.
func NewBlob([]byte) *Blob { return nil }

// Acquire always fails off Linux.
func (b *Blob) Acquire() bool { return false }

// Release does nothing off Linux.
func (b *Blob) Release() {}

// FD is -1 off Linux.
func (b *Blob) FD() int { return -1 }

// Size is 0 off Linux.
func (b *Blob) Size() int64 { return 0 }
