//go:build linux

package edge

import (
	"bytes"
	"errors"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPrefault checks that prefault makes exactly the pages holding the
// slice resident and leaves every byte of them as it was, those outside
// the slice too.
func TestPrefault(t *testing.T) {
	const page, pages = 4096, 16
	probe, err := unix.Mmap(-1, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Madvise(probe, unix.MADV_POPULATE_WRITE)
	unix.Munmap(probe)
	if errors.Is(err, unix.EINVAL) {
		t.Skip("MADV_POPULATE_WRITE needs Linux 5.14")
	}
	tests := []struct {
		name         string
		from, to     int // the slice, in bytes of the mapping
		wantResident []bool
	}{
		{"whole pages", 2 * page, 5 * page, resident(pages, 2, 5)},
		{"rounded out", 3*page + 100, 7*page - 1, resident(pages, 3, 7)},
		{"one byte", 9*page + 4095, 9*page + 4096, resident(pages, 9, 10)},
		{"empty", 4 * page, 4 * page, resident(pages, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A fresh anonymous mapping: no page is resident until touched.
			m, err := unix.Mmap(-1, 0, pages*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Munmap(m)
			if err := prefault(m[tt.from:tt.to]); err != nil {
				t.Fatal(err)
			}
			vec := make([]byte, pages)
			if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
				t.Fatal(errno)
			}
			for i, want := range tt.wantResident {
				if got := vec[i]&1 == 1; got != want {
					t.Errorf("page %d resident %v, want %v", i, got, want)
				}
			}
			if !bytes.Equal(m, make([]byte, len(m))) {
				t.Error("prefault changed the mapping's bytes")
			}
		})
	}
	t.Run("keeps bytes", func(t *testing.T) {
		b := make([]byte, 40<<10)
		for i := range b {
			b[i] = byte(i * 7)
		}
		want := bytes.Clone(b)
		if err := prefault(b[1000 : 30<<10]); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Error("prefault changed bytes of a filled buffer")
		}
	})
}

// resident lists pages pages, those in [from, to) resident.
func resident(pages, from, to int) []bool {
	r := make([]bool, pages)
	for i := from; i < to; i++ {
		r[i] = true
	}
	return r
}
