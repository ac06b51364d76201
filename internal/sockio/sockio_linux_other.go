//go:build linux && !(amd64 || arm64 || riscv64 || ppc64le || s390x || loong64)

package sockio

import "golang.org/x/sys/unix"

// RawSend is send(2) (an ordinary system call here).
func RawSend(fd uintptr, b []byte, flags int) (int, error) {
	return unix.SendmsgN(int(fd), b, nil, nil, flags|unix.MSG_NOSIGNAL)
}

// RawSendfile is sendfile(2) (an ordinary system call here).
func RawSendfile(fd uintptr, src int, off *int64, count int64) (int, error) {
	return unix.Sendfile(int(fd), src, off, int(count))
}
