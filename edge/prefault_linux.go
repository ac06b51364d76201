//go:build linux

package edge

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// prefault faults in the pages holding b before b is filled. A large body
// buffer is fresh memory from the kernel, each page faulted in by the
// first write to it: a trap per 4 KiB page, which on a paravirtualised VM
// took a cold 2 MiB miss from 8.6 ms of CPU to 12.5. MADV_POPULATE_WRITE
// (Linux 5.14) faults a range in with one system call and leaves the
// bytes as they are; where it fails, the pages fault in as before. The
// range is rounded out to whole pages: each one holds bytes of b, so it
// is mapped. The error is for tests: callers go on without the advice.
func prefault(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	const page = 4096
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	start := addr &^ (page - 1)
	end := (addr + uintptr(len(b)) + page - 1) &^ (page - 1)
	_, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_POPULATE_WRITE)
	runtime.KeepAlive(b)
	if errno != 0 {
		return errno
	}
	return nil
}
