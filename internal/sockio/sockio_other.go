//go:build !(linux && (amd64 || arm64 || riscv64 || ppc64le || s390x || loong64))

package sockio

import (
	"net"
	"syscall"
	"time"
)

const supported = false

type rawIO struct {
	deferNext bool
	tcp       *net.TCPConn
}

func (r *rawIO) init(syscall.RawConn)                                         {}
func (r *rawIO) read(p []byte) (int, error)                                   { panic("sockio: unsupported") }
func (r *rawIO) write(p []byte) (int, error)                                  { panic("sockio: unsupported") }
func (r *rawIO) writev([][]byte, int) (int64, error)                          { panic("sockio: unsupported") }
func (r *rawIO) sendPending() error                                           { return nil }
func (r *rawIO) readLoop(func() bool) error                                   { panic("sockio: unsupported") }
func (r *rawIO) setReadDeadline(t time.Time, set func(time.Time) error) error { return set(t) }
