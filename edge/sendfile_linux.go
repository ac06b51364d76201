//go:build linux

package edge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
	"github.com/edgestack/edgestack/internal/sockio"
	"golang.org/x/sys/unix"
)

// sendHeadAndBlob writes head, then the blob with sendfile(2): the body's
// pages go to the socket without a copy through user memory. The caller
// holds a reference on blob. ok is false when c is not a TCP socket (the
// caller then writes from memory).
func sendHeadAndBlob(c net.Conn, head []byte, blob *cache.Blob) (ok bool, err error) {
	var off int64
	size := blob.Size()
	return writeLoop(c, func(fd uintptr) (bool, error) {
		if len(head) > 0 {
			// MSG_MORE: let the header share a segment with the body.
			n, err := sockio.RawSend(fd, head, unix.MSG_MORE)
			if err != nil {
				return false, err
			}
			head = head[n:]
			return false, nil
		}
		if off >= size {
			return true, nil
		}
		n, err := sockio.RawSendfile(fd, blob.FD(), &off, size-off)
		if err == nil && n == 0 {
			err = syscall.EIO // the file is shorter than it should be
		}
		return false, err
	})
}

// writeLoop runs step on c's socket until it reports done or an error:
// EAGAIN waits for the socket to take more, EINTR steps again. ok is
// false when c is not a TCP socket (nothing was written).
func writeLoop(c net.Conn, step func(fd uintptr) (done bool, err error)) (ok bool, err error) {
	tc, isTCP := sockio.TCP(c)
	if !isTCP {
		return false, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false, nil
	}
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for {
			done, err := step(fd)
			switch {
			case err == unix.EAGAIN:
				return false
			case err == unix.EINTR:
			case err != nil:
				werr = err
				return true
			case done:
				return true
			}
		}
	})
	if err == nil {
		err = werr
	}
	return true, err
}

// meltdownFile says whether the kernel isolates its page tables (PTI).
var meltdownFile = "/sys/devices/system/cpu/vulnerabilities/meltdown"

// defaultSendfileMin is cache.sendfile_min_size's default. With PTI every
// system call costs more, and sendfile needs two per response (head,
// body) where one writev does: measured on such a VM, writev won up to
// about 150 KiB (100 KiB hits: 35 against 40 µs of CPU), sendfile from
// 200 KiB on. Without PTI sendfile already won at 64 KiB.
func defaultSendfileMin() Size {
	b, err := os.ReadFile(meltdownFile)
	if err == nil && bytes.Contains(b, []byte("PTI")) {
		return 160 << 10
	}
	return 64 << 10
}

// sendfileMax resolves cache.sendfile_max_size: auto is no bound for
// copies in sendfile_dir, else memfdSendfileMax.
func (c CacheConfig) sendfileMax() Size {
	switch {
	case c.SendfileMaxSize != SizeAuto:
		return c.SendfileMaxSize
	case c.SendfileDir != "":
		// A disk file's pages sit in large folios: on the Intel VM where a
		// memfd's sendfile lost to a write (and where the measurement below
		// also ruled against the file), 1 MiB hits under wrk took 147-152
		// µs of CPU from the file against 224-230 written from memory.
		return 0
	default:
		return memfdSendfileMax()
	}
}

// memfdSendfileMax is measured once per process: 0 (no bound) when
// sendfile(2) from a memfd sends a 1 MiB body over loopback TCP for less
// CPU than a write from memory, else 768 KiB. Which one wins differs
// between machines of the same kind: on one VM sendfile took 330–350 µs
// of CPU per 1 MiB hit against 245 for a write, on another 178–217
// against 245–278, on a third (Intel, Linux 6.18) 243–272 against
// 214–221, with no setting of the kernel that tells them apart. The
// measurement takes about 70 ms, when the first snapshot is built.
var memfdSendfileMax = sync.OnceValue(func() Size {
	// The majority of three measurements: one alone still went the wrong
	// way about one time in ten on that third VM.
	votes := 0
	for range 3 {
		if wins, err := sendfileWins(1<<20, 25); err == nil && wins {
			votes++
		}
	}
	if votes < 2 {
		return 768 << 10
	}
	return 0
})

// sendfileWins sends size bytes rounds times each way, alternating, over
// a loopback TCP connection, and reports whether sendfile's median thread
// CPU time is at least 10% lower than write's. Each send starts with the connection
// drained (the reader reads the whole body, then says so): a send's cost
// depends on how full the socket's buffers are, and sends issued back to
// back made the verdict a coin toss on one VM.
func sendfileWins(size, rounds int) (bool, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return false, err
	}
	defer ln.Close()
	accepted := make(chan struct{})
	drained := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		defer c.Close()
		accepted <- struct{}{}
		buf := make([]byte, 256<<10)
		for {
			if _, err := io.ReadFull(c, buf[:min(len(buf), size)]); err != nil {
				drained <- err
				return
			}
			for left := size - min(len(buf), size); left > 0; {
				n, err := io.ReadFull(c, buf[:min(len(buf), left)])
				if err != nil {
					drained <- err
					return
				}
				left -= n
			}
			drained <- nil
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return false, err
	}
	defer c.Close()
	if _, ok := <-accepted; !ok {
		return false, errors.New("loopback accept failed")
	}
	body := make([]byte, size)
	blob := cache.NewBlob("", body)
	if blob == nil {
		return false, errors.New("memfd_create failed")
	}
	defer blob.Release()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	// Thread CPU time measures only this goroutine's sends when it keeps
	// its thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var viaWrite, viaSendfile []time.Duration
	for i := 0; i < rounds; i++ {
		t0 := threadCPU()
		if _, err := c.Write(body); err != nil {
			return false, err
		}
		t1 := threadCPU()
		if err := <-drained; err != nil {
			return false, err
		}
		t2 := threadCPU()
		if _, err := sendHeadAndBlob(c, nil, blob); err != nil {
			return false, err
		}
		t3 := threadCPU()
		if err := <-drained; err != nil {
			return false, err
		}
		viaWrite, viaSendfile = append(viaWrite, t1-t0), append(viaSendfile, t3-t2)
	}
	slices.Sort(viaWrite)
	slices.Sort(viaSendfile)
	// By a margin: a write from memory is the safe side of a close call.
	return viaSendfile[rounds/2] < viaWrite[rounds/2]*9/10, nil
}

// processCPU is the CPU time of all the process's threads so far.
func processCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}
